from __future__ import annotations

import contextlib
import gc

import pytest
import torch


@pytest.fixture(scope="session")
def reference(tiny_checkpoint):
    from vllm_sambay.testing.reference import SambaYReference

    return SambaYReference.from_pretrained(tiny_checkpoint, dtype=torch.float64)


@pytest.fixture(scope="session")
def tiny_config(tiny_checkpoint):
    from vllm_sambay.config import Phi4FlashConfig

    return Phi4FlashConfig.from_pretrained(tiny_checkpoint)


@contextlib.contextmanager
def engine(checkpoint, **overrides):
    """A float32 in-process engine; released on exit so the next test can start its own."""
    from vllm import LLM

    kwargs = dict(model=str(checkpoint), dtype="float32", enforce_eager=True, max_model_len=1024, seed=0)
    kwargs.update(overrides)
    llm = LLM(**kwargs)
    try:
        yield llm
    finally:
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


@pytest.fixture
def make_engine():
    return engine
