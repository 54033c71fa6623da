"""Reference results for the MRv2 CPU-op stand-ins (``mrv2_cpu_ops``), from vLLM 0.34's own
Triton kernels run by Triton's interpreter on CPU tensors. Test code only.

``TRITON_INTERPRET=1 python tests/compat/mrv2_reference_kernels.py OUT.pt`` with vLLM 0.34's
sources first on ``PYTHONPATH`` (``scripts/vllm_overlay.py --version 0.34.0``). For each op it
draws batches shaped as the standalone CPU runner builds them (dtypes of
``v1/worker/cpu/{states,input_batch,block_table,sampler,logits_processors,rope}.py``: prefills,
chunked prefills, decodes, padding rows, skipped rows), runs the GPU runner's kernel of the same
name on them, and saves ``{op: [{"args": before, "after": args after, "out": result}]}``;
``tests/compat/test_mrv2_cpu_ops.py`` runs each stand-in on ``args`` and compares.

vLLM sees no Triton on a CPU (``HAS_TRITON`` is False, its kernels are placeholders), so this
script hands the real ``triton`` to ``vllm.triton_utils`` before importing the kernel modules.
"""

from __future__ import annotations

import copy
import os
import sys
import zlib

import torch

NUM_CASES = 6
MAX_REQS, MAX_LEN, MAX_TOKENS = 6, 64, 96


def _triton_kernels():
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("set TRITON_INTERPRET=1: the kernels run in Triton's interpreter on CPU tensors")
    import triton
    import triton.language as tl
    import vllm.triton_utils

    vllm.triton_utils.triton, vllm.triton_utils.tl = triton, tl
    from vllm.v1.worker.gpu import block_table, input_batch
    from vllm.v1.worker.gpu.mm import rope
    from vllm.v1.worker.gpu.sample import gumbel, logit_bias, prompt_logprob

    return block_table, input_batch, rope, gumbel, logit_bias, prompt_logprob


def _batch(g: torch.Generator, case: int) -> dict:
    """Request state as the standalone runner keeps it, and one scheduled batch over it.
    case 0: prefills only; 1: decodes only; others: mixed, some prefills chunked."""
    num_reqs = int(torch.randint(1, MAX_REQS + 1, (1,), generator=g))
    idx = torch.randperm(MAX_REQS, generator=g)[:num_reqs]
    prefill_len = torch.randint(1, MAX_LEN // 2, (MAX_REQS,), generator=g).int()
    computed = torch.zeros(MAX_REQS, dtype=torch.int32)
    query = []
    for r in idx.tolist():
        decode = case == 1 or (case != 0 and bool(torch.rand(1, generator=g) < 0.5))
        if decode:  # past the prompt, some tokens generated
            computed[r] = prefill_len[r] + int(torch.randint(0, 8, (1,), generator=g))
            query.append(1)
        else:  # a prefill chunk, from the start or continuing
            computed[r] = int(torch.randint(0, int(prefill_len[r]), (1,), generator=g))
            query.append(int(torch.randint(1, int(prefill_len[r] - computed[r]) + 1, (1,), generator=g)))
    qsl = torch.zeros(num_reqs + 1, dtype=torch.int32)
    qsl[1:] = torch.cumsum(torch.tensor(query), 0)
    total = computed + 0
    for i, r in enumerate(idx.tolist()):
        total[r] = max(int(prefill_len[r]), int(computed[r]) + query[i])
    return {
        "num_reqs": num_reqs,
        "idx": idx.to(torch.int64),
        "prefill_len": prefill_len,
        "computed": computed,
        "qsl": qsl,
        "num_tokens": int(qsl[-1]),
        "all_token_ids": torch.randint(0, 1000, (MAX_REQS, MAX_LEN), generator=g, dtype=torch.int32),
        "total_len": total,
    }


def _record(fn, args: tuple) -> dict:
    before = copy.deepcopy(args)
    out = fn(*args)
    return {"args": before, "after": args, "out": out}


def cases_prepare_prefill_inputs(k, g, b, case):
    args = (
        torch.full((MAX_TOKENS,), -1, dtype=torch.int32),
        torch.full((1 + case % 2, MAX_REQS), -1, dtype=torch.int32),  # lookahead 1 (as the runner) or 2
        b["idx"],
        b["qsl"],
        b["all_token_ids"],
        b["prefill_len"],
        b["computed"],
    )
    return _record(k.input_batch.prepare_prefill_inputs, args)


def cases_prepare_pos_seq_lens(k, g, b, case):
    args = (
        b["idx"],
        b["qsl"],
        b["computed"],
        torch.full((MAX_TOKENS,), -1, dtype=torch.int64),
        torch.full((MAX_REQS,), -1, dtype=torch.int32),
    )
    return _record(k.input_batch.prepare_pos_seq_lens, args)


def _seq_lens(b) -> torch.Tensor:
    q = b["qsl"][1:] - b["qsl"][:-1]
    return (b["computed"][b["idx"]] + q).int()


def cases_combine_sampled_and_draft_tokens(k, g, b, case):
    n = b["num_reqs"]
    last = torch.randint(0, 1000, (MAX_REQS, 1), generator=g, dtype=torch.int64)
    args = (
        torch.randint(0, 1000, (MAX_TOKENS,), generator=g, dtype=torch.int32),
        b["idx"],
        last,
        b["qsl"],
        _seq_lens(b),
        b["prefill_len"],
        last[:, :0],  # what the runner passes: no drafts
        torch.arange(n + 1, dtype=torch.int32),
        n,
        1,  # the standalone runner refuses anything but one sampled token per step
    )
    return _record(k.input_batch.combine_sampled_and_draft_tokens, args)


def cases_post_update(k, g, b, case):
    n = b["num_reqs"]
    idx = b["idx"].clone()
    if case % 2 and n > 1:
        idx[0] = -1  # a filtered row
    sampled = torch.randint(0, 50, (n, 1), generator=g, dtype=torch.int64)
    num_sampled = torch.randint(0, 2, (n,), generator=g, dtype=torch.int32)
    args = (
        idx,
        b["computed"].clone(),
        torch.randint(0, 1000, (MAX_REQS, 1), generator=g, dtype=torch.int64),
        torch.zeros(MAX_REQS, 50, dtype=torch.int32) if case % 3 == 0 else None,
        sampled,
        num_sampled,
        torch.zeros(n, dtype=torch.int32) if case % 2 else (1 - num_sampled),
        b["qsl"] if case != 4 else None,
        b["all_token_ids"].clone(),
        b["total_len"].clone(),
    )
    return _record(k.input_batch.post_update, args)


def cases_gather_block_table(k, g, b, case):
    width = 5
    src = torch.randint(1, 100, (MAX_REQS, width), generator=g, dtype=torch.int32)
    num_blocks = torch.randint(0, width + 1, (MAX_REQS,), generator=g, dtype=torch.int32)
    out = torch.full((MAX_REQS, width), 7, dtype=torch.int32)
    num_rows = min(MAX_REQS, b["num_reqs"] + case % 3)
    args = (src, out, b["idx"], num_blocks, num_rows)
    ptr = lambda t: torch.tensor([t.data_ptr()], dtype=torch.uint64)  # noqa: E731

    def reference(block_table, output, idx_mapping, blocks, rows):
        counts = blocks.view(1, -1)
        k.block_table._gather_block_tables_kernel[(1, rows)](
            idx_mapping,
            ptr(block_table),
            ptr(output),
            torch.tensor([block_table.stride(0)]),
            counts,
            counts.stride(0),
            idx_mapping.shape[0],
            torch.zeros(MAX_REQS, dtype=torch.int32),
            torch.zeros(1, dtype=torch.int32),
            torch.tensor([16], dtype=torch.int32),
            MASK_SLIDING_WINDOW=False,
            BLOCK_SIZE=1024,
        )

    return _record(reference, args)


def cases_compute_slot_mapping(k, g, b, case):
    block_size = (16, 32)[case % 2]
    table = torch.randint(0, 50, (MAX_REQS, MAX_LEN // 16 + 1), generator=g, dtype=torch.int32)
    idx = b["idx"].clone()
    if case == 3:
        idx[-1] = -1  # a dummy request: no blocks, padding slots
    positions = torch.zeros(MAX_TOKENS, dtype=torch.int64)
    for i, r in enumerate(b["idx"].tolist()):
        s, e = int(b["qsl"][i]), int(b["qsl"][i + 1])
        positions[s:e] = torch.arange(int(b["computed"][r]), int(b["computed"][r]) + e - s)
    args = (table, torch.full((MAX_TOKENS,), 5, dtype=torch.int64), idx, b["qsl"], positions, block_size, case != 5, -1)
    ptr = lambda t: torch.tensor([t.data_ptr()], dtype=torch.uint64)  # noqa: E731

    def reference(block_table, slot_mapping, idx_mapping, qsl, pos, bs, enabled, pad):
        slots = slot_mapping.view(1, -1)
        k.block_table._compute_slot_mappings_kernel[(1, idx_mapping.shape[0] + 1)](
            slots.shape[1],
            idx_mapping,
            qsl,
            pos,
            ptr(block_table),
            torch.tensor([block_table.stride(0)]),
            torch.tensor([bs], dtype=torch.int32),
            torch.tensor([enabled]),
            torch.tensor([True]),
            slots,
            slots.stride(0),
            0,
            CP_SIZE=1,
            CP_INTERLEAVE=1,
            PAD_ID=pad,
            TRITON_BLOCK_SIZE=1024,
        )

    return _record(reference, args)


def cases_gumbel_sample(k, g, b, case):
    n, vocab = b["num_reqs"], 2500  # more than two of the kernel's 1024-wide blocks
    logits = torch.randn(n, vocab, generator=g)  # noise of the order of the logit gaps
    temperature = torch.rand(MAX_REQS, generator=g) + 0.3
    temperature[torch.rand(MAX_REQS, generator=g) < 0.4] = 0.0  # greedy rows
    seeds = torch.randint(-(2**62), 2**62, (MAX_REQS,), generator=g, dtype=torch.int64)
    pos = torch.randint(0, 5000, (n,), generator=g, dtype=torch.int64)
    use_fp64, drafting, apply_t = case % 2 == 1, case == 4, case != 2

    def reference(*args):
        *head, fp64 = args
        return k.gumbel.gumbel_sample(*head, use_fp64=fp64)

    return _record(reference, (logits, b["idx"], temperature, seeds, pos, apply_t, drafting, use_fp64))


def cases_apply_logit_bias(k, g, b, case):
    n, vocab, width = b["num_reqs"], 300, 8
    logits = torch.randn(n, vocab, generator=g)

    def counts(hi):
        return torch.randint(0, hi, (MAX_REQS,), generator=g, dtype=torch.int32)

    def ids():
        return torch.stack([torch.randperm(vocab, generator=g)[:width] for _ in range(MAX_REQS)]).int()

    allowed_n = counts(width + 1) * (case % 2)
    if case == 5:
        # every allowed id is a stop id: masking them empties the row, and rows that ask get them back
        allowed = ids()
        stop = allowed.clone()
        allowed_n = torch.full((MAX_REQS,), 3, dtype=torch.int32)
        stop_n = allowed_n.clone()
        min_lens = torch.full((MAX_REQS,), 100, dtype=torch.int32)
    else:
        allowed, stop, stop_n, min_lens = ids(), ids(), counts(width + 1), counts(12)
    args = (
        logits,
        b["idx"],
        torch.randint(0, 10, (n,), generator=g, dtype=torch.int64),
        allowed_n,
        allowed,
        counts(width + 1),
        ids(),
        torch.randn(MAX_REQS, width, generator=g),
        min_lens,
        stop_n,
        torch.randint(0, 2, (MAX_REQS,), generator=g, dtype=torch.int32),
        stop,
        case >= 3,
    )
    return _record(k.logit_bias.apply_logit_bias, args)


def cases_get_prompt_logprobs_token_ids(k, g, b, case):
    # Prompt logprobs are computed for prefill chunks; the next token always exists there.
    computed = b["computed"].clone()
    for i, r in enumerate(b["idx"].tolist()):
        q = int(b["qsl"][i + 1] - b["qsl"][i])
        computed[r] = min(int(computed[r]), MAX_LEN - 1 - q)
    args = (b["num_tokens"], b["qsl"], b["idx"], computed, b["all_token_ids"])
    return _record(k.prompt_logprob.get_prompt_logprobs_token_ids, args)


def cases_prepare_mrope_positions(k, g, b, case):
    dims = 3
    args = (
        torch.full((dims, MAX_TOKENS + 1), -1, dtype=torch.int64),
        torch.randint(0, 500, (MAX_REQS * dims, MAX_LEN), generator=g, dtype=torch.int32),
        torch.randint(-20, 20, (MAX_REQS,), generator=g, dtype=torch.int32),
        b["idx"],
        b["qsl"],
        b["prefill_len"],
        b["computed"],
    )

    def reference(positions, prefill_positions, delta, idx_mapping, qsl, prefill_lens, computed):
        k.rope._prepare_rope_positions_kernel[(idx_mapping.shape[0],)](
            positions,
            positions.stride(0),
            prefill_positions,
            dims * MAX_LEN,
            MAX_LEN,
            delta,
            idx_mapping,
            qsl,
            prefill_lens,
            computed,
            BLOCK_SIZE=1024,
            NUM_DIMS=dims,
        )

    return _record(reference, args)


OPS = {
    "prepare_prefill_inputs_cpu": cases_prepare_prefill_inputs,
    "prepare_pos_seq_lens_cpu": cases_prepare_pos_seq_lens,
    "combine_sampled_and_draft_tokens_cpu": cases_combine_sampled_and_draft_tokens,
    "post_update_cpu": cases_post_update,
    "gather_block_table_cpu": cases_gather_block_table,
    "compute_slot_mapping_cpu": cases_compute_slot_mapping,
    "gumbel_sample_cpu": cases_gumbel_sample,
    "apply_logit_bias_cpu": cases_apply_logit_bias,
    "get_prompt_logprobs_token_ids_cpu": cases_get_prompt_logprobs_token_ids,
    "prepare_mrope_positions_cpu": cases_prepare_mrope_positions,
}


def main(argv: list[str]) -> int:
    (out,) = argv
    block_table, input_batch, rope, gumbel, logit_bias, prompt_logprob = _triton_kernels()
    k = type("Kernels", (), {})()
    k.block_table, k.input_batch, k.rope = block_table, input_batch, rope
    k.gumbel, k.logit_bias, k.prompt_logprob = gumbel, logit_bias, prompt_logprob
    results = {}
    for name, make in OPS.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        results[name] = [make(k, g, _batch(g, case), case) for case in range(NUM_CASES)]
    torch.save(results, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
