"""sambay-serve's argument defaults on top of vLLM's own serve parser (no engine started)."""

from __future__ import annotations

import pytest

from sambay_server import cli, policies


@pytest.fixture
def parse(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(cli, "DEFAULT_TINY", tiny_checkpoint)  # the no-model default, already written
    monkeypatch.delenv("SAMBAY_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    return cli.parse_args


def test_no_model_serves_the_tiny_checkpoint_with_cpu_defaults(parse, tiny_checkpoint):
    args = parse([])
    assert args.model == str(tiny_checkpoint) and args.served_model_name == ["sambay-tiny"]
    assert args.max_model_len == 2048 and args.host == "127.0.0.1"
    assert args.dtype == "float32" and args.enforce_eager  # this machine is a CPU one
    assert args.reasoning_parser == "phi4_flash" == args.structured_outputs_config.reasoning_parser
    assert args.middleware == [cli.MIDDLEWARE]
    assert policies.settings_from_args(args).max_request_bytes == (1 << 20) + 64 * 2048


def test_explicit_flags_win(parse, tiny_checkpoint):
    args = parse([str(tiny_checkpoint), "--dtype", "bfloat16", "--no-enforce-eager", "--reasoning-parser",
                  "deepseek_r1", "--host", "0.0.0.0", "--max-model-len", "512", "--max-request-bytes", "1000",
                  "--middleware", "x.Y"])  # fmt: skip
    assert args.model == str(tiny_checkpoint) and args.served_model_name is None
    assert (args.dtype, args.enforce_eager, args.reasoning_parser, args.host) == ("bfloat16", False, "deepseek_r1",
                                                                                  "0.0.0.0")  # fmt: skip
    assert args.max_request_bytes == 1000 and args.middleware == ["x.Y", cli.MIDDLEWARE]


def test_policy_flags_are_the_policy_options(parse):
    """One source for defaults: every policy option with a flag is a flag with the same default."""
    args = parse([])
    defaults = policies.settings()
    for option in policies.options():
        if option.cli_flag is not None and option.derive is None:
            assert getattr(args, option.name) == option.default == getattr(defaults, option.name), option.name
    assert parse(["--max-pending", "3", "--body-timeout-s", "1.5"]).max_pending == 3


def test_request_id_headers_are_on_and_taken_over(parse):
    args = parse([])
    assert args.sambay_request_id_headers and not args.enable_request_id_headers  # vLLM's copy stays off
    assert not parse(["--no-enable-request-id-headers"]).sambay_request_id_headers


def test_the_key_is_taken_over_from_vllm(parse, monkeypatch):
    args = parse(["--api-key", "k1"])
    assert args.api_key is None and args.sambay_api_keys == ["k1"]  # vLLM's own /v1-only guard stays off
    monkeypatch.setenv("SAMBAY_API_KEY", "k2")
    assert parse([]).sambay_api_keys == ["k2"]
    monkeypatch.delenv("SAMBAY_API_KEY")
    monkeypatch.setenv("VLLM_API_KEY", "k3")
    assert parse([]).sambay_api_keys == ["k3"]


def test_sigterm_drains_for_the_graceful_period(parse):
    assert parse(["--graceful-shutdown-s", "12"]).shutdown_timeout == 12
