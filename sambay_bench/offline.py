"""Offline-engine modes for one model: decode sweep, latency vs generation length, TTFT.

``python -m sambay_bench.offline SPEC.json`` runs in a process of its own for each model, so
each gets a clean GPU and a crash or an OOM costs one model, not the run. The engine runs in this
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): ``step()`` is then exactly one engine step, timed
here with nothing in between, and the scheduler can be asked how many requests it could admit.
Results go to stdout as event lines (``results.event_line``); vLLM's own log goes along.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import FIRST_ID
from .results import event_line
from .roofline import DecodeBytes, decode_bytes, hbm_tbps, roofline_ms


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
    """Adds token-id requests to vLLM's LLMEngine and steps it, counting new tokens per request."""

    def __init__(self, llm, vocab_size: int, seed: int = 0) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.engine = llm.llm_engine
        self.max_num_seqs = self.engine.vllm_config.scheduler_config.max_num_seqs
        self.vocab_size = vocab_size
        self.rng = random.Random(seed)
        self._params = lambda n: SamplingParams(
            max_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False, output_kind=RequestOutputKind.DELTA
        )
        self._next = 0
        self.live: set[str] = set()

    def prompt(self, length: int) -> list[int]:
        """Fresh random ids: no two requests share a prefix, so nothing is served from a cache."""
        return [self.rng.randrange(FIRST_ID, self.vocab_size) for _ in range(length)]

    def add(self, prompt_len: int, max_tokens: int) -> str:
        rid = f"bench-{self._next}"
        self._next += 1
        self.engine.add_request(rid, {"prompt_token_ids": self.prompt(prompt_len)}, self._params(max_tokens))
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


class Runner:
    def __init__(self, driver: EngineDriver, model: str, cost: DecodeBytes, tbps: float | None) -> None:
        self.d, self.model, self.cost, self.tbps = driver, model, cost, tbps

    @staticmethod
    def check(deadline: float) -> None:
        if time.perf_counter() > deadline:
            raise OutOfTime

    # -- mode 2 ------------------------------------------------------------------------------
    def decode(
        self,
        batches: list[int],
        contexts: list[int],
        steps: int,
        warmup_steps: int,
        max_model_len: int,
        budget_s: float,
    ) -> None:
        """ms per decode step with ``batch`` sequences at ``context`` tokens each. Prompts are
        ``context - warmup - steps/2`` long, so the timed steps are centred on ``context``. When the
        KV cache cannot hold the batch, the point runs with as many as the scheduler admits and
        says so (``batch_running``, ``limited_by``)."""
        deadline = time.perf_counter() + budget_s
        points = sorted(((b, c) for b in batches for c in contexts), key=lambda p: (p[0] * p[1], p[0]))
        measured: list[dict[str, Any]] = []
        prefill_tok_s: float | None = None
        for i, (batch, context) in enumerate(points):
            emit("progress", mode="decode", model=self.model, n=i, total=len(points), desc=f"B={batch} L={context}")
            prompt_len = context - warmup_steps - steps // 2
            where = {"model": self.model, "batch": batch, "context": context}
            if prompt_len < 1:
                emit("skip", mode="decode", point=where, reason=f"context {context} is shorter than the steps")
                continue
            if context + steps > max_model_len:
                emit(
                    "skip",
                    mode="decode",
                    point=where,
                    reason=f"context {context} exceeds max_model_len {max_model_len}",
                )
                continue
            left = deadline - time.perf_counter()
            guess = self._decode_time_guess(batch, context, prompt_len, steps + warmup_steps, measured, prefill_tok_s)
            if guess is not None and guess > left:
                emit(
                    "skip",
                    mode="decode",
                    point=where,
                    reason=f"time budget: needs ~{guess:.0f} s, {max(left, 0):.0f} s left",
                )
                continue
            try:
                point = self._decode_point(batch, context, prompt_len, steps, warmup_steps, max_model_len, deadline)
            except OutOfTime:
                self.d.abort_all()
                emit("skip", mode="decode", point=where, reason="time budget ran out during the point")
                continue
            measured.append(point)
            if point["prefill_s"] > 0:
                rate = point["batch_running"] * prompt_len / point["prefill_s"]
                prefill_tok_s = max(prefill_tok_s or 0.0, rate)
            emit("point", mode="decode", point=point)
        emit("progress", mode="decode", model=self.model, n=len(points), total=len(points), desc="done")

    def _decode_time_guess(self, batch, context, prompt_len, steps, measured, prefill_tok_s) -> float | None:
        """Prefill at the best rate seen so far plus steps costed by bytes read, scaled from the last
        (largest, so nearest) point measured; None before anything was measured."""
        if not measured or not prefill_tok_s:
            return None
        last = measured[-1]
        ms = (
            last["ms_per_step"]
            * self.cost.per_step(batch, context)
            / self.cost.per_step(last["batch_running"], last["context"])
        )
        return batch * prompt_len / prefill_tok_s + steps * ms / 1e3

    def _decode_point(self, batch, context, prompt_len, steps, warmup_steps, max_model_len, deadline) -> dict[str, Any]:
        """Requests may generate up to max_model_len, so none finishes inside the point, however long
        the others take to prefill (early starters decode meanwhile); all are aborted at its end.
        ``context_mean`` is the measured mean context at the middle of the timed steps."""
        d = self.d
        for _ in range(batch):
            d.add(prompt_len, max_model_len - prompt_len)
        generated: Counter[str] = Counter()
        t0 = time.perf_counter()
        limited_by, stuck = None, 0
        while len(generated) < batch:
            self.check(deadline)
            generated.update(d.step())
            view = d.scheduler()
            # Nobody prefilling while requests wait: the scheduler could not admit them.
            if view is not None and view.waiting and not view.prefilling and len(generated) >= view.running:
                stuck += 1
                if stuck >= 3:
                    limited_by = "max_num_seqs" if view.running >= d.max_num_seqs else "kv_capacity"
                    break
            else:
                stuck = 0
        prefill_s = time.perf_counter() - t0
        for _ in range(warmup_steps):
            self.check(deadline)
            generated.update(d.step())
        before = dict(generated)
        tokens = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            self.check(deadline)
            new = d.step()
            generated.update(new)
            tokens += sum(new.values())
        elapsed = time.perf_counter() - t0
        d.abort_all()
        in_window = [r for r in generated if generated[r] > before.get(r, 0)]
        midpoints = [(before.get(r, 0) + generated[r]) / 2 for r in in_window]
        context_mean = prompt_len + sum(midpoints) / max(len(midpoints), 1)
        running = round(tokens / steps)
        ms = elapsed / steps * 1e3
        step_bytes = self.cost.per_step(running, round(context_mean))
        roof = roofline_ms(step_bytes, self.tbps)
        return {
            "model": self.model,
            "batch": batch,
            "context": context,
            "prompt_len": prompt_len,
            "context_mean": context_mean,
            "batch_running": running,
            "limited_by": limited_by,
            "steps": steps,
            "ms_per_step": ms,
            "tok_s": tokens / elapsed,
            "prefill_s": prefill_s,
            "bytes_per_step": step_bytes,
            "roofline_ms": roof,
            "roofline_fraction": roof / ms if roof else None,
        }

    # -- mode 3 ------------------------------------------------------------------------------
    def genlen(self, prompt_len: int, gen_lens: list[int], max_model_len: int, budget_s: float) -> None:
        """One request generating max(gen_lens) tokens; the latency for length g is the time of
        its g-th token (the same as a request stopped at g: nothing else runs at C = 1)."""
        deadline = time.perf_counter() + budget_s
        gen_lens = sorted(gen_lens)
        fits = [g for g in gen_lens if prompt_len + g <= max_model_len]
        for g in sorted(set(gen_lens) - set(fits)):
            emit(
                "skip",
                mode="genlen",
                point={"model": self.model, "gen_len": g},
                reason=f"prompt {prompt_len} + {g} exceeds max_model_len {max_model_len}",
            )
        if not fits:
            return
        self.d.add(prompt_len, fits[-1])
        t0 = time.perf_counter()
        produced, ttft, pending = 0, None, list(fits)
        every, reported = max(1, fits[-1] // 100), 0
        try:
            while pending:
                self.check(deadline)
                produced += sum(self.d.step().values())
                now = time.perf_counter() - t0
                if produced and ttft is None:
                    ttft = now
                while pending and produced >= pending[0]:
                    g = pending.pop(0)
                    emit(
                        "point",
                        mode="genlen",
                        point={
                            "model": self.model,
                            "prompt_len": prompt_len,
                            "gen_len": g,
                            "latency_s": now,
                            "ttft_s": ttft,
                            "gen_latency_s": now - ttft,
                            "ms_per_token": (now - ttft) / max(g - 1, 1) * 1e3,
                        },
                    )
                if produced - reported >= every:
                    reported = produced
                    emit("progress", mode="genlen", model=self.model, n=produced, total=fits[-1], desc="tokens")
        except OutOfTime:
            for g in pending:
                emit(
                    "skip",
                    mode="genlen",
                    point={"model": self.model, "gen_len": g},
                    reason=f"time budget ran out at {produced} tokens",
                )
        self.d.abort_all()

    # -- mode 4 ------------------------------------------------------------------------------
    def ttft(self, prompt_lens: list[int], repeats: int, max_model_len: int, budget_s: float) -> None:
        """Prefill alone: time from adding a request to its first token, alone in the engine. One
        unmeasured request per length first (kernels are compiled per shape)."""
        deadline = time.perf_counter() + budget_s
        for i, length in enumerate(sorted(prompt_lens)):
            emit("progress", mode="ttft", model=self.model, n=i, total=len(prompt_lens), desc=f"prompt {length}")
            where = {"model": self.model, "prompt_len": length}
            if length + 1 > max_model_len:
                emit("skip", mode="ttft", point=where, reason=f"prompt {length} exceeds max_model_len {max_model_len}")
                continue
            samples: list[float] = []
            try:
                for r in range(repeats + 1):
                    self.check(deadline)
                    t0 = time.perf_counter()
                    self.d.add(length, 1)
                    while self.d.live:
                        self.check(deadline)
                        self.d.step()
                    if r:
                        samples.append((time.perf_counter() - t0) * 1e3)
            except OutOfTime:
                self.d.abort_all()
            if not samples:
                emit("skip", mode="ttft", point=where, reason="time budget ran out")
                continue
            median = statistics.median(samples)
            emit(
                "point",
                mode="ttft",
                point={**where, "ttft_ms": median, "ttft_ms_samples": samples, "prefill_tok_s": length / median * 1e3},
            )
        emit("progress", mode="ttft", model=self.model, n=len(prompt_lens), total=len(prompt_lens), desc="done")


def environment() -> dict[str, Any]:
    import torch
    import vllm

    from vllm_sambay import __version__

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": "cuda" if gpu else "cpu",
        "gpu": gpu,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "vllm_sambay": __version__,
        "cuda": torch.version.cuda,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    env = environment()
    tbps = spec.get("hbm_tbps") or hbm_tbps(env["gpu"])
    cost = decode_bytes(spec["model"], spec["size"], dtype_bytes=spec["dtype_bytes"])
    emit("environment", model=spec["model"], environment={**env, "hbm_tbps": tbps})
    t0 = time.perf_counter()
    llm = LLM(**spec["engine"], skip_tokenizer_init=True)
    emit("engine", model=spec["model"], start_s=time.perf_counter() - t0)
    runner = Runner(EngineDriver(llm, spec["vocab_size"]), spec["model"], cost, tbps)
    for mode, kwargs in spec["modes"].items():
        getattr(runner, mode)(**kwargs)
    emit("done", model=spec["model"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
