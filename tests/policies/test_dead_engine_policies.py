"""The dead-engine decision (one place), the watch that acts on it, and the 503s it causes —
including the SIGTERM case: a deliberately stopped engine is not a dead one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from types import SimpleNamespace

from asgi_stub import Stub, acall, call

from sambay_server import policies
from sambay_server.event_loop import StopNotingLoop
from sambay_server.policies import engine_state, engine_watch
from sambay_server.policies.dead_engine import DeadEngine
from sambay_server.policies.engine_watch import EngineWatch

VLLM_500 = json.dumps({"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError",
                                 "param": None, "code": 500}}).encode()  # fmt: skip


def engine(errored=False):
    return SimpleNamespace(errored=errored, dead_error=RuntimeError("gone"))


def test_errored_without_a_stop_is_death_and_it_sticks():
    liveness = engine_state.EngineLiveness()
    eng = engine()
    assert not liveness.judge(eng) and not liveness.judge(None)
    eng.errored = True
    assert liveness.judge(eng)
    eng.errored = False
    liveness.note_stop_requested()
    assert liveness.judge(eng)  # once dead, always dead


def test_errored_after_a_stop_request_is_not_death():
    liveness = engine_state.EngineLiveness()
    liveness.note_stop_requested()
    assert not liveness.judge(engine(errored=True))


def test_the_loop_notes_sigterm_before_vllms_handler_runs():
    seen = []
    loop = StopNotingLoop()
    try:
        loop.add_signal_handler(signal.SIGTERM, lambda: seen.append(engine_state.LIVENESS.stop_requested))
        loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.remove_signal_handler(signal.SIGTERM)
    finally:
        loop.close()
    assert seen == [True] and engine_state.LIVENESS.stop_requested


def test_a_500_from_a_dead_engine_becomes_503():
    eng = engine()
    stub = Stub(reply=lambda scope, body: (eng.__setattr__("errored", True), (500, "application/json", [VLLM_500]))[1],
                engine=eng)  # fmt: skip
    r = call(DeadEngine(stub, policies.settings()), stub=stub)
    err = r.json()["error"]
    assert r.status == 503 and err["code"] == 503 and err["type"] == "ServiceUnavailableError"
    assert "engine died" in err["message"] and int(r.headers["content-length"]) == len(r.body)


def test_after_a_deliberate_stop_vllms_500_passes_unchanged(fresh_liveness):
    fresh_liveness.LIVENESS.note_stop_requested()
    eng = engine(errored=True)
    stub = Stub(reply=lambda scope, body: (500, "application/json", [VLLM_500]), engine=eng)
    r = call(DeadEngine(stub, policies.settings()), stub=stub)
    assert r.status == 500 and r.body == VLLM_500


def test_a_stream_in_flight_gets_a_503_error_event():
    eng = engine()
    event = b'data: {"error": {"message": "x", "type": "InternalServerError", "param": null, "code": 500}}\n\n'

    def reply(scope, body):
        eng.errored = True
        return 200, "text/event-stream", [b'data: {"choices": []}\n\n', event, b"data: [DONE]\n\n"]

    stub = Stub(reply=reply, engine=eng)
    r = call(DeadEngine(stub, policies.settings()), stub=stub)
    errors = [json.loads(line[6:]) for line in r.body.split(b"\n") if line.startswith(b'data: {"error')]
    assert r.status == 200 and errors[-1]["error"]["code"] == 503


def test_while_dead_new_requests_are_503_but_probes_pass(fresh_liveness):
    fresh_liveness.LIVENESS.dead = True
    stub = Stub(engine=engine(errored=True))
    app = DeadEngine(stub, policies.settings())
    r = call(app, stub=stub)
    assert r.status == 503 and r.json()["error"]["type"] == "ServiceUnavailableError" and not stub.seen
    assert call(app, "GET", "/health", stub=stub).status == 200
    assert call(app, "GET", "/health", query=b"deep=true", stub=stub).status == 503


async def _lifespan(app, stub, until, at_shutdown=lambda: None):
    """Run the lifespan: startup, wait for ``until()``, shutdown (``at_shutdown()`` just before the
    app receives it)."""
    queue = asyncio.Queue()
    queue.put_nowait({"type": "lifespan.startup"})
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        message = await queue.get()
        if message["type"] == "lifespan.shutdown":
            at_shutdown()
        return message

    task = asyncio.create_task(app({"type": "lifespan", "app": stub}, receive, send))
    for _ in range(40):
        if until():
            break
        await asyncio.sleep(0.1)
    queue.put_nowait({"type": "lifespan.shutdown"})
    await task
    return sent


def test_the_watch_stops_the_server_on_death_and_schedules_the_exit(monkeypatch):
    exits = []
    eng = engine()
    stub = Stub(engine=eng)
    watch = EngineWatch(stub, policies.settings(exit_on_engine_death_s=0.05))

    monkeypatch.setattr(engine_watch.os, "_exit", exits.append)

    async def run():
        asyncio.get_running_loop().call_later(0.3, setattr, eng, "errored", True)
        await _lifespan(watch, stub, lambda: bool(exits))

    asyncio.run(run())
    assert stub.state.server.should_exit and engine_state.LIVENESS.dead
    assert exits == [engine_state.ENGINE_DEAD_EXIT_CODE]


def test_the_watch_leaves_a_deliberate_stop_alone():
    eng = engine()
    stub = Stub(engine=eng)
    watch = EngineWatch(stub, policies.settings(exit_on_engine_death_s=0.05))

    async def run():
        engine_state.LIVENESS.note_stop_requested()
        eng.errored = True
        return await _lifespan(watch, stub, lambda: False)

    asyncio.run(run())
    assert not stub.state.server.should_exit and not engine_state.LIVENESS.dead


def test_death_noticed_only_at_shutdown_still_counts():
    eng = engine()
    stub = Stub(engine=eng)
    watch = EngineWatch(stub, policies.settings(exit_on_engine_death_s=None))

    async def run():  # vLLM stopped the server before the next poll saw the death
        return await _lifespan(watch, stub, lambda: True, at_shutdown=lambda: setattr(eng, "errored", True))

    asyncio.run(run())
    assert engine_state.LIVENESS.dead


def test_the_composed_chain_answers_503_once_dead(fresh_liveness):
    stub = Stub(engine=engine(errored=True))
    app = policies.compose(stub, policies.settings())

    async def run():
        return await acall(app, body={"prompt": "x"}, stub=stub)

    fresh_liveness.LIVENESS.dead = True
    assert asyncio.run(run()).status == 503
