"""sambay-serve's app for embedders (Ray Serve): vLLM's own FastAPI app over an engine client,
with the sambay-serve middleware, built from sambay-serve arguments.

``sambay-serve`` itself does not call this: it runs vLLM's ``run_server`` path (see
:mod:`sambay_server.cli`), which builds the same app.
"""

from __future__ import annotations

from . import vllm_front


async def build_app(args, engine_client):
    """The app ``sambay-serve`` would serve for ``args`` (from :func:`sambay_server.cli.parse_args`)
    over ``engine_client`` (a vLLM ``AsyncLLM``). The caller owns the engine's lifetime."""
    return await vllm_front.build_app(args, engine_client)
