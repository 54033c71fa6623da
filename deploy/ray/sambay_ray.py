"""Ray Serve application: N replicas of ``sambay-serve``'s FastAPI app, each with its own vLLM engine.

Ray Serve's HTTP proxy spreads requests over the replicas and its autoscaler adds or removes
replicas on the number of requests in flight. Every replica builds exactly the app that
``sambay-serve`` runs (same argument parsing, same routes, auth and back-pressure), so a client
cannot tell the two apart except for the ``x-sambay-replica`` response header, which names the
replica that answered (so load spreading can be observed, and tested).

Used by ``serve run deploy/ray/serve_config.yaml`` and by the KubeRay ``RayService`` in
``deploy/ray/rayservice.yaml``; the import path is ``sambay_ray:build`` with this directory on
``PYTHONPATH`` (the container image puts it there).
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from ray import serve
from ray.serve import Application

REPLICA_HEADER = b"x-sambay-replica"

# Per replica. vLLM batches internally, so a replica takes many requests at once; the server's
# own --max-pending still answers 429 beyond its limit.
DEFAULT_MAX_ONGOING = 64
DEFAULT_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 16,
    "upscale_delay_s": 30,
    "downscale_delay_s": 600,  # a new replica costs a model load: keep it a while
}


class _ReplicaHeader:
    """Pure ASGI wrapper (keeps streaming and disconnect detection intact) that stamps each
    response with the replica id and pid."""

    def __init__(self, app, replica: str) -> None:
        self.app, self.value = app, replica.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def stamped(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((REPLICA_HEADER, self.value))
            await send(message)

        await self.app(scope, receive, stamped)

    # Ray Serve installs its exception handlers on the app it is given; forward them.
    def add_exception_handler(self, exc, handler) -> None:
        self.app.add_exception_handler(exc, handler)


@serve.deployment(
    name="sambay",
    max_ongoing_requests=DEFAULT_MAX_ONGOING,
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=60,
)
@serve.ingress()
class SambayReplica:
    """One replica = one ``AsyncLLM`` engine + the ``sambay-serve`` app (vLLM's app + our middleware) over it."""

    async def __init__(self, argv: list[str]) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from sambay_server.app import build_app
        from sambay_server.cli import parse_args

        args = parse_args(list(argv))
        args.exit_on_engine_death_s = None  # Ray restarts a replica whose check_health fails
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs.from_cli_args(args))
        # vLLM's own app (every route of `vllm serve`) with the sambay-serve middleware.
        self.server_app = await build_app(args, self.engine)
        replica = serve.get_replica_context().replica_id.unique_id
        self.replica = f"{replica}/pid-{os.getpid()}"

    def __del__(self) -> None:
        # Ray Serve calls this when the replica stops: no engine process outlives its replica.
        engine = getattr(self, "engine", None)
        if engine is not None:
            from sambay_server.policies.engine_state import LIVENESS

            LIVENESS.note_stop_requested()  # a stopped engine, not a dead one (no 503 "engine died")
            engine.shutdown()

    def __serve_build_asgi_app__(self):
        return _ReplicaHeader(self.server_app, self.replica)

    async def check_health(self) -> None:
        """Ray Serve restarts a replica whose engine died instead of routing to it."""
        await self.engine.check_health()


def build(config: dict[str, Any]) -> Application:
    """Application builder for ``serve run`` / ``serve deploy`` / RayService.

    ``config`` keys (all optional): ``server_args`` (``sambay-serve`` arguments, a list or one
    string; without ``--model`` the tiny CPU checkpoint), ``num_cpus`` and ``num_gpus`` per
    replica, ``autoscaling`` (Ray Serve autoscaling_config, merged over the defaults here) or
    ``num_replicas`` (a fixed count instead), ``max_ongoing_requests``.
    """
    argv = config.get("server_args", [])
    argv = shlex.split(argv) if isinstance(argv, str) else [str(a) for a in argv]
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": float(config.get("num_cpus", 1)),
            "num_gpus": float(config.get("num_gpus", 0)),
        },
        "max_ongoing_requests": int(config.get("max_ongoing_requests", DEFAULT_MAX_ONGOING)),
    }
    if "num_replicas" in config:
        options["num_replicas"] = int(config["num_replicas"])
    else:
        options["autoscaling_config"] = {**DEFAULT_AUTOSCALING, **config.get("autoscaling", {})}
    return SambayReplica.options(**options).bind(argv)
