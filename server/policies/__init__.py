"""What sambay-serve adds to vLLM's OpenAI server: one small pure-ASGI policy per concern.

vLLM loads them through its public ``--middleware`` flag as ONE entry, :class:`SambayPolicies`,
which composes the list below. One entry rather than one ``--middleware`` per policy because the
order is part of the behaviour (the access log must see every answer, auth must run before the
body is read, the error shape must see vLLM's raw answers): here it is written once, outermost
first, while with separate entries it would be spelled by flag order under Starlette's rule that
the *last* added middleware is the outermost — and a user's own ``--middleware`` entries could land
between ours. Each policy still switches on and off by its own setting.

The order (a request passes down the list, its response back up):
"""

from __future__ import annotations

import argparse
import importlib

from .asgi import ASGIApp, Receive, Scope, Send
from .policy import Policy
from .settings import Option, Settings, SettingsError

# "module:Class" in this package: the file of each policy is named in the list itself, and adding
# a policy is its file plus one line here.
POLICY_PATHS = [
    "engine_watch:EngineWatch",  # lifespan: notice engine death, stop the server, exit non-zero
    "access_log:AccessLog",  # one JSON line per request, whatever answered it
    "route_metrics:RouteMetrics",  # sambay_server_requests_total{route template, status}
    "request_id:RequestId",  # one sane X-Request-Id for the engine, the response and the log
    "sse_headers:SseHeaders",  # no proxy buffering of event streams
    "dead_engine:DeadEngine",  # 503 while the engine is dead (new requests and those in flight)
    "auth:ApiKeyAuth",  # the key on every route but /health and /metrics
    "key_rate_limit:KeyRateLimit",  # at most --rate-limit-per-key requests/s per API key; 429 beyond
    "admission:Admission",  # at most --max-pending requests for the engine; 429 beyond
    "deep_health:DeepHealth",  # GET /health?deep=true generates one token
    "body_limits:BodyLimits",  # 413 / 408 before anything parses the body; read once
    "field_validation:FieldValidation",  # 400 for fields vLLM would accept and ignore, unusable values, deep nesting
    "fan_out:FanOut",  # n bounded by --max-n; a request charged its sequences against --max-pending
    "reply_size:ReplySize",  # 400 up front for a non-streamed reply too large to build on the event loop
    "reasoning_mirror:ReasoningMirror",  # reasoning_content beside reasoning in chat responses
    "error_shape:ErrorShape",  # framework errors (404, 405) as OpenAI error bodies
]


def _load(path: str) -> type[Policy]:
    module, name = path.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), name)


POLICIES: list[type[Policy]] = [_load(path) for path in POLICY_PATHS]
__doc__ += "\n".join(f"{i}. ``{path}``" for i, path in enumerate(POLICY_PATHS, 1))

__all__ = ["POLICIES", "Option", "Policy", "SambayPolicies", "Settings", "SettingsError", "options", "settings"]


def options() -> list[Option]:
    """Every option of every policy, in list order."""
    return [option for policy in POLICIES for option in policy.options]


def settings(**values) -> Settings:
    """Settings with these values and every other option at its default (tests, embedders)."""
    return Settings(options(), values)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_args(options(), args)


def check(settings: Settings) -> None:
    """Every policy's start-up check (raises :class:`SettingsError` naming the flag)."""
    for policy in POLICIES:
        policy.check(settings)


def compose(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` wrapped in the enabled policies, the first of :data:`POLICIES` outermost."""
    for policy in reversed(POLICIES):
        if policy.enabled(settings):
            app = policy(app, settings)
    return app


class SambayPolicies:
    """The ``--middleware`` entry: the policies around vLLM's app.

    vLLM constructs middleware with the app alone, so the settings are read on the first call (the
    lifespan start-up) from ``scope["app"].state.args`` — the parsed ``sambay-serve`` arguments
    vLLM keeps there. Under a plain ``vllm serve --middleware sambay_server.policies.SambayPolicies``
    every sambay-serve option is at its default.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.chain: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.chain is None:
            args = getattr(getattr(scope.get("app"), "state", None), "args", None)
            self.chain = compose(self.app, settings_from_args(args) if args is not None else settings())
        await self.chain(scope, receive, send)
