"""Each stand-in of tests/compat/mrv2_cpu_ops.py against vLLM 0.34's own Triton kernel of the
same name, run by Triton's interpreter on CPU tensors (tests/compat/mrv2_reference_kernels.py,
six batches per op: prefills, chunked prefills, decodes, padding and skipped rows, greedy and
seeded sampling in fp32 and fp64). Every argument after the call, and the result, must be
identical."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mrv2_cpu_ops  # noqa: E402

RELEASE = "0.34.0"


@pytest.fixture(scope="module")
def reference_results(run_on_release, tmp_path_factory):
    out = tmp_path_factory.mktemp("mrv2-ops") / "reference.pt"
    proc = run_on_release(
        RELEASE, "tests/compat/mrv2_reference_kernels.py", str(out), env={"TRITON_INTERPRET": "1"}, timeout=900
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return torch.load(out, weights_only=False)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a[~a.isnan()], b[~b.isnan()])
        )
    return a == b


@pytest.mark.parametrize("op", sorted(mrv2_cpu_ops.SCHEMAS))
def test_stand_in_matches_the_triton_kernel(reference_results, op):
    cases = reference_results[op]
    assert cases
    for i, case in enumerate(cases):
        args = copy.deepcopy(case["args"])
        out = mrv2_cpu_ops.STAND_INS[op](*args)
        for j, (got, want) in enumerate(zip(args, case["after"], strict=True)):
            assert same(got, want), f"{op} case {i}: argument {j} differs from the Triton kernel's"
        assert same(out, case["out"]), f"{op} case {i}: result differs from the Triton kernel's"
