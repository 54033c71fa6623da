"""Fixtures of the policy tests (the stub app and the request driver are in ``asgi_stub.py``)."""

from __future__ import annotations

import pytest
from asgi_stub import Stub

from sambay_server import policies
from sambay_server.policies import engine_state


@pytest.fixture
def stub():
    return Stub()


@pytest.fixture
def settings():
    return policies.settings


@pytest.fixture(autouse=True)
def fresh_liveness(monkeypatch):
    """Every test starts with a live engine verdict (the process-wide one is not touched)."""
    monkeypatch.setattr(engine_state, "LIVENESS", engine_state.EngineLiveness())
    return engine_state
