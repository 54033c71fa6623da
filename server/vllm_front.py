"""The few vLLM front-end entry points sambay-serve uses, resolved once per release.

vLLM moved its server modules in 0.30 (``vllm.entrypoints.openai.{api_server,cli_args}`` →
``vllm.entrypoints.launchers.*``; the old paths are deprecation shims there). Only the public
launch path is used — the parser ``vllm serve`` uses, ``run_server(args, **uvicorn_kwargs)``, and
``build_app`` + ``init_app_state`` for embedders (Ray) — all present from 0.26 to 0.32.
"""

from __future__ import annotations

import warnings


def _import(new: str, old: str):
    import importlib

    try:
        return importlib.import_module(new)
    except ImportError:  # pragma: no cover - vLLM < 0.30 layout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(old)


def _launch():
    return _import("vllm.entrypoints.launchers.api_server.entry", "vllm.entrypoints.openai.api_server")


def _cli_args():
    return _import("vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args")


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
    """What ``vllm serve`` does first (multiprocessing start method)."""
    try:
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup as setup
    except ImportError:  # pragma: no cover - older layout
        try:
            from vllm.entrypoints.utils import cli_env_setup as setup
        except ImportError:
            return
    setup()


def run(args, **uvicorn_kwargs) -> None:
    """``vllm serve``'s run path: engine, app (with ``args.middleware``), uvicorn, signal handling."""
    import uvloop

    uvloop.run(_launch().run_server(args, **uvicorn_kwargs))


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


def is_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
