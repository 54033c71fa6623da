"""One streamed chat completion over geventhttpclient, timed line by line.

geventhttpclient is what Locust's FastHttpUser runs on (far less CPU per request than
requests/urllib3), but FastHttpUser's ``iter_content(n)`` waits until ``n`` bytes have arrived,
which would merge several SSE events into one timestamp. ``readline`` returns as soon as a line
is complete, so every event is timed when it lands. No Locust import here: the tests drive this
module directly, in a process gevent has not monkey-patched.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from geventhttpclient import HTTPClient

from sambay_client.sse import RequestResult, StreamReader, http_error


class Endpoint:
    """A server base URL (may carry a path prefix, e.g. ``https://host/openai``) and its key."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 600.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.prefix = parts.path.rstrip("/")
        self.client = HTTPClient.from_url(
            base_url, concurrency=1, connection_timeout=min(timeout_s, 60.0), network_timeout=timeout_s
        )
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
        }  # a compressed SSE body could not be read line by line
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self.client.close()

    def first_model(self, path: str = "/v1/models") -> str:
        """The first model the server lists: what to send when the user named none."""
        resp = self.client.get(self.prefix + path, headers=self.headers)
        try:
            body = resp.read()
        finally:
            resp.release()
        if resp.status_code != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status_code}: {body[:300]!r}")
        models = json.loads(body).get("data") or []
        if not models:
            raise RuntimeError(f"GET {path}: the server lists no model")
        return models[0]["id"]

    def stream(self, path: str, body: dict, clock=time.perf_counter) -> RequestResult:
        """POST ``body`` (with ``"stream": true``) and time every SSE line of the answer."""
        payload = json.dumps(body).encode()
        start = clock()
        try:
            resp = self.client.request("POST", self.prefix + path, body=payload, headers=self.headers)
        except Exception as exc:  # refused, reset, timed out: no HTTP status at all
            return RequestResult(
                status=0,
                error=f"connection error: {type(exc).__name__}",
                detail=str(exc)[:500],
                total_ms=(clock() - start) * 1e3,
            )
        try:
            if resp.status_code != 200:
                return http_error(resp.status_code, resp.read(), clock() - start)
            reader = StreamReader(start)
            try:
                while line := resp.readline(b"\n"):
                    reader.feed(line, clock())
            except Exception as exc:  # the connection broke off mid-stream
                reader.fail(f"connection error: {type(exc).__name__}", str(exc)[:500])
            return reader.finish(clock())
        finally:
            resp.release()  # back to the pool if the body was read to the end, closed otherwise
