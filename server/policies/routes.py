"""Which route a request goes to, and what kind of request it is — written once for every policy.

Routes are vLLM's own (the FastAPI app in ``scope["app"]``), matched the way Starlette matches them,
so the metric label is the route template and the request schema is the route's own model.
"""

from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import parse_qs

from .asgi import Scope

OPEN_PATHS = ("/health", "/metrics")  # answered without a key (probes, scrapers)
UNCOUNTED_POSTS = ("/tokenize", "/detokenize")  # cheap, never reach the engine: not admitted
CHAT_PATHS = ("/v1/chat/completions",)
UNMATCHED = "unmatched"  # the metric label of every path no route serves
_CACHE_LIMIT = 256  # distinct (method, path) pairs remembered per app; only served paths are cached


def query_flag(scope: Scope, name: str) -> bool:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name, [])
    return any(v.lower() in ("1", "true", "yes") for v in values)


def is_deep_health(scope: Scope) -> bool:
    """``GET /health?deep=true``: generates a token, so it is guarded and admitted like a request."""
    return scope["path"] == "/health" and query_flag(scope, "deep")


def is_open(scope: Scope) -> bool:
    """Answered without a key and whatever the engine's state (shallow health, metrics)."""
    return scope["path"].startswith(OPEN_PATHS) and not is_deep_health(scope)


def is_admitted(scope: Scope) -> bool:
    """Counts against ``--max-pending``: work for the engine (POSTs but tokenizing, deep health)."""
    if is_deep_health(scope):
        return True
    return scope["method"] == "POST" and not scope["path"].startswith(UNCOUNTED_POSTS)


def is_chat(scope: Scope) -> bool:
    return scope["path"] in CHAT_PATHS


class RouteTable:
    """The routes of one app, matched once per distinct (method, path)."""

    def __init__(self, app: Any) -> None:
        self.routes = list(getattr(app, "routes", None) or [])
        self.cache: dict[tuple[str, str], Any] = {}

    def match(self, scope: Scope) -> Any | None:
        key = (scope.get("method", ""), scope["path"])
        if key in self.cache:
            return self.cache[key]
        from starlette.routing import Match

        found = None
        for route in self.routes:
            try:
                match, _ = route.matches(scope)
            except Exception:  # noqa: BLE001 - a route that cannot judge this scope is not it
                continue
            if match == Match.FULL:
                found = route
                break
        if found is not None and len(self.cache) < _CACHE_LIMIT:
            self.cache[key] = found
        return found


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def route_of(scope: Scope) -> Any | None:
    """The route of the app in ``scope`` that serves this request, or None."""
    app = scope.get("app")
    if app is None:
        return None
    try:
        table = _TABLES.get(app)
        if table is None:
            table = _TABLES[app] = RouteTable(app)
    except TypeError:  # an app that cannot be weakly referenced: match without caching
        table = RouteTable(app)
    return table.match(scope)


def template(scope: Scope) -> str:
    """The route template (``/v1/models/{model}``), or ``unmatched``: a bounded metric label."""
    return getattr(route_of(scope), "path", None) or UNMATCHED


def body_annotation(scope: Scope) -> Any | None:
    """The type FastAPI validates this route's JSON body with (vLLM's own request model), or None."""
    route = route_of(scope)
    dependant = getattr(route, "dependant", None)
    for param in getattr(dependant, "body_params", None) or []:
        annotation = getattr(getattr(param, "field_info", None), "annotation", None)
        if annotation is not None:
            return annotation
    return None
