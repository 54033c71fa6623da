"""The request-head limits of sambay-serve's uvicorn protocol (431), against a real uvicorn server
on a loopback socket serving a small ASGI app (no engine), spoken to over raw sockets."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest
import uvicorn

from sambay_server import cli, http, policies

FIELDS, HEAD_BYTES = http.TimedHttpProtocol.max_header_fields, http.TimedHttpProtocol.max_header_bytes
# An "X-Pad" value that makes `request("X-Pad: ...")` exactly HEAD_BYTES as counted: target "/",
# name + value + 4 per field ("Host: x" and "X-Pad: ...").
PAD_TO_LIMIT = HEAD_BYTES - len("/") - (len("host") + len("x") + 4) - (len("x-pad") + 4)


async def count_headers(scope, receive, send):
    """200 with the number of headers the app saw (and the body length it read)."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"headers": len(scope["headers"]), "body": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def address():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(count_headers, http=http.TimedHttpProtocol, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(10)


def exchange(address, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send a request (from a thread: the server may answer before it has read it all); return
    (status, reply body, what followed the reply before end of stream)."""
    s = socket.create_connection(address, timeout=10)
    sender = threading.Thread(target=_send_all, args=(s, head + body))
    sender.start()
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(65536)
        assert chunk, f"closed without an answer after {reply!r}"
        reply += chunk
    start, _, rest = reply.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in start.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(rest) < length:
        rest += s.recv(65536)
    after = b""
    if b"connection: close" in start.lower():
        while chunk := s.recv(65536):  # until the server's end of stream (a timeout fails the test)
            after += chunk
    sender.join(10)
    s.close()
    return int(start.split(b" ")[1]), rest[:length], rest[length:] + after


def _send_all(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:  # the server closed after answering: what it did not read is not our concern
        pass


def request(*headers: str, path: str = "/", method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sdk_like_headers() -> list[str]:
    """What an OpenAI SDK sends, plus tracing and a long bearer token."""
    stainless = ["Lang", "Package-Version", "OS", "Arch", "Runtime", "Runtime-Version", "Async", "Retry-Count"]
    names = ["Accept", "Accept-Encoding", "Connection", "User-Agent", "Traceparent", "Baggage", "X-Stainless-Timeout"]
    names += [f"X-Stainless-{n}" for n in stainless]
    return [f"{n}: v-{i}" for i, n in enumerate(names)] + ["Authorization: Bearer " + "t" * 4000]


def test_ordinary_requests_are_unaffected(address):
    status, body, _ = exchange(address, request(*sdk_like_headers()))
    assert status == 200 and json.loads(body)["headers"] == 17
    big_body = b"x" * (3 * HEAD_BYTES)  # sent with the head in one write: body bytes are no head bytes
    status, body, _ = exchange(address, request(method="POST", body=big_body) + big_body)
    assert status == 200 and json.loads(body)["body"] == len(big_body)
    # at the limits exactly: Host + 99 fields; a head of exactly max_header_bytes counted bytes
    assert exchange(address, request(*[f"X-F{i}: v" for i in range(FIELDS - 1)]))[0] == 200
    assert exchange(address, request("X-Pad: " + "p" * PAD_TO_LIMIT))[0] == 200


def test_keep_alive_counts_each_request_afresh(address):
    s = socket.create_connection(address, timeout=10)
    for _ in range(3):  # three heads of 2/3 of the limit on one connection
        s.sendall(request("X-Pad: " + "p" * (HEAD_BYTES * 2 // 3)))
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
    s.close()


@pytest.mark.parametrize(
    ("name", "head", "flag"),
    [
        ("a 1 MB header", request("X-Big: " + "a" * (1 << 20)), "--max-header-bytes"),
        ("20 000 headers", request(*[f"X-H{i}: v" for i in range(20_000)]), "--max-header-fields"),
        ("one field too many", request(*[f"X-F{i}: v" for i in range(FIELDS)]), "--max-header-fields"),
        ("a head one byte too long in one read", request("X-Pad: " + "p" * (PAD_TO_LIMIT + 1)), "--max-header-bytes"),
    ],
)
def test_oversized_heads_get_431_and_the_connection_closed(address, name, head, flag):
    status, body, after = exchange(address, head)
    assert status == 431, name
    error = json.loads(body)["error"]
    assert error["code"] == 431 and flag in error["message"] and len(body) < 300, error
    assert after == b""  # nothing more: end of stream (exchange reads until the server closes)


def test_the_endless_header_is_cut_off_without_buffering_it(address):
    """A header that never ends: answered once the limit is passed, not when the client stops."""
    s = socket.create_connection(address, timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sent, reply = 0, b""
    while not reply and sent < 64 * HEAD_BYTES:
        s.sendall(b"a" * 4096)
        sent += 4096
        if select.select([s], [], [], 0.01)[0]:
            reply = s.recv(65536)
    s.close()
    assert reply.startswith(b"HTTP/1.1 431"), (sent, reply[:100])
    assert sent <= 4 * HEAD_BYTES, sent


def test_nonsensical_limits_are_refused_at_start_up(tiny_checkpoint, monkeypatch):
    parser = cli.build_parser()
    defaults = http.settings_from_args(parser.parse_args([]))
    assert (defaults.max_header_fields, defaults.max_header_bytes, defaults.header_timeout_s) == (100, 32768, 10.0)
    for flag, value in (("--max-header-fields", "0"), ("--max-header-bytes", "512"), ("--header-timeout-s", "0")):
        with pytest.raises(policies.SettingsError, match=flag):
            http.check(http.settings_from_args(parser.parse_args([flag, value])))
    monkeypatch.setattr(cli, "DEFAULT_TINY", tiny_checkpoint)
    with pytest.raises(SystemExit):  # sambay-serve stops with the message, before any engine starts
        cli.parse_args(["--max-header-bytes", "512"])
    # vLLM's own header flags limit nothing under httptools: refused, not accepted and ignored
    with pytest.raises(SystemExit):
        cli.parse_args(["--h11-max-header-count", "50"])
    assert cli.parse_args(["--max-header-bytes", "4096"]).h11_max_incomplete_event_size == 4096  # h11 fallback
