"""SAMBAY_MAMBA_OPS: resolved once per layer when it is built, refused when it cannot be honoured."""

from __future__ import annotations

import pytest

from vllm_sambay.ops import ENV, mamba_torch, select_mamba_ops


def test_auto_picks_torch_without_cuda_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert select_mamba_ops(platform_is_cuda=False) is mamba_torch
    monkeypatch.setenv(ENV, "torch")
    assert select_mamba_ops(platform_is_cuda=False) is mamba_torch


@pytest.mark.parametrize("value", ["cuda", "triton", "1"])
def test_values_that_cannot_be_honoured_are_refused(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ValueError, match=ENV):
        select_mamba_ops(platform_is_cuda=False)


def test_the_forward_path_reads_no_environment():
    import inspect

    from vllm_sambay.layers import mamba

    src = inspect.getsource(mamba.SambaYMamba.forward_impl) + inspect.getsource(mamba.SambaYMamba._mix)
    assert "environ" not in src and "import" not in src and "select_mamba_ops" not in src
