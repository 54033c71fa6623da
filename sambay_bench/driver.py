"""What an offline mode runs on: vLLM's LLMEngine stepped by hand, in the per-model worker.

The engine core runs in the worker's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): ``step()``
is then exactly one engine step, timed with nothing in between, and the scheduler can be asked how
many requests it could admit. Modes report on stdout as event lines (``results.event_line``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sambay_client.workload import BenchmarkTokenPrompts

from .results import event_line

if TYPE_CHECKING:
    from .roofline import DecodeBytes


def emit(kind: str, **data: Any) -> None:
    print(event_line(kind, **data), flush=True)


class OutOfTime(Exception):
    """The mode's time budget ran out in the middle of a point."""


@dataclass
class SchedulerView:
    running: int
    waiting: int
    prefilling: int


class EngineDriver:
    """Adds token-id requests to vLLM's LLMEngine and steps it, counting new tokens per request.
    Prompts come from the one workload definition's benchmark-token builder: fresh random ids, so
    no two requests share a prefix and nothing is served from a cache."""

    def __init__(self, llm, vocab_size: int, seed: int = 0) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.engine = llm.llm_engine
        self.max_num_seqs = self.engine.vllm_config.scheduler_config.max_num_seqs
        self.prompts = BenchmarkTokenPrompts(vocab_size)
        self.rng = random.Random(seed)
        self._params = lambda n: SamplingParams(
            max_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False, output_kind=RequestOutputKind.DELTA
        )
        self._next = 0
        self.live: set[str] = set()

    def add(self, prompt_len: int, max_tokens: int) -> str:
        rid = f"bench-{self._next}"
        self._next += 1
        prompt = {"prompt_token_ids": self.prompts.ids(prompt_len, self.rng)}
        self.engine.add_request(rid, prompt, self._params(max_tokens))
        self.live.add(rid)
        return rid

    def step(self) -> dict[str, int]:
        """One engine step; new tokens per request that got any."""
        new: dict[str, int] = {}
        for out in self.engine.step():
            n = sum(len(c.token_ids) for c in out.outputs)
            if n:
                new[out.request_id] = n
            if out.finished:
                self.live.discard(out.request_id)
        return new

    def abort_all(self) -> None:
        if self.live:
            self.engine.abort_request(sorted(self.live))
            self.live.clear()
        while self.engine.has_unfinished_requests():
            self.engine.step()

    def scheduler(self) -> SchedulerView | None:
        """What the scheduler holds, when the engine core runs in this process (None otherwise)."""
        sched = getattr(getattr(getattr(self.engine, "engine_core", None), "engine_core", None), "scheduler", None)
        if sched is None:
            return None
        prefilling = sum(1 for r in sched.running if r.num_computed_tokens < r.num_prompt_tokens)
        return SchedulerView(running=len(sched.running), waiting=len(sched.waiting), prefilling=prefilling)


class OfflineRun:
    """What an offline mode's ``run`` gets: the driver, the model's name, the bytes its decode step
    reads (for the roofline) and the HBM bandwidth (None: unknown, no roofline)."""

    def __init__(self, driver: EngineDriver, model: str, cost: DecodeBytes, tbps: float | None) -> None:
        self.d, self.model, self.cost, self.tbps = driver, model, cost, tbps

    @staticmethod
    def check(deadline: float) -> None:
        if time.perf_counter() > deadline:
            raise OutOfTime
