"""The published Phi-4-mini-flash-reasoning tokenizer, rebuilt from the vocabulary shipped in ``data/phi4flash``.

Why rebuild: the public copy of the published repository carries ``vocab.json`` but not ``tokenizer.json``,
and the project must work from a clone alone (no hub). The vocabulary is OpenAI's o200k: the id of an
ordinary token is also its BPE merge rank (tiktoken semantics), so the merges follow from the vocabulary:
a token of rank ``r`` is the merge of the two pieces that byte-pair encoding of its own bytes reaches
using only ranks below ``r``. The pre-tokenizer is o200k's split pattern followed by the byte-level
mapping; the added tokens and their ids come from the published ``tokenizer_config.json``.

What users get from this tokenizer, and what tests must therefore assume: ``<think>`` and ``</think>``
are plain text (three BPE tokens each, whose ``>`` merges with the newlines that follow), and the model's
head has 200064 rows while the tokenizer knows 200010 ids, with gaps (ids 199998, 200000..200017 and
200029..200063 have no token).
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

PUBLISHED_DIR = Path(__file__).with_name("data") / "phi4flash"
# Ordinary (BPE) tokens are ids 0..199997; everything above is an added token or a gap.
NUM_BPE_TOKENS = 199998
# o200k's split regex (tiktoken's ``o200k_base`` pattern): letters with case-aware contractions,
# numbers in groups of at most three digits, punctuation runs that keep trailing newlines, whitespace.
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)


def published_json(name: str) -> dict:
    """One of the published JSON files (``tokenizer_config.json``, ``generation_config.json``, ``config.json``)."""
    return json.loads((PUBLISHED_DIR / name).read_text(encoding="utf-8"))


def bpe_ranks() -> dict[str, int]:
    """The ordinary tokens of the published vocab (byte-level unicode strings) and their ranks."""
    with gzip.open(PUBLISHED_DIR / "vocab.json.gz", "rt", encoding="utf-8") as f:
        vocab = json.load(f)
    return {token: i for token, i in vocab.items() if i < NUM_BPE_TOKENS}


def merges_from_ranks(ranks: dict[str, int]) -> list[tuple[str, str]]:
    """The BPE merge list, in rank order, equivalent to rank-based (tiktoken) encoding."""

    def split(token: str, rank: int) -> list[str]:
        parts = list(token)
        while len(parts) > 1:
            best, at = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best:
                    best, at = r, i
            if at < 0:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        return parts

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            pieces = split(token, rank)
            if len(pieces) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
            merges.append((pieces[0], pieces[1]))
    return merges


@functools.lru_cache(maxsize=1)
def tokenizer_json() -> str:
    """The ``tokenizer.json`` text (a ``tokenizers`` BPE; about 1.5 s to build, cached per process)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks = bpe_ranks()
    added = published_json("tokenizer_config.json")["added_tokens_decoder"]
    # The added tokens sit in the model's vocabulary at their published ids (with gaps between them),
    # so that the tokenizers library keeps those ids instead of numbering added tokens after the BPE.
    vocab = {**ranks, **{spec["content"]: int(i) for i, spec in added.items()}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges_from_ranks(ranks)))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(
        [
            AddedToken(
                spec["content"],
                special=spec["special"],
                single_word=spec["single_word"],
                lstrip=spec["lstrip"],
                rstrip=spec["rstrip"],
                normalized=spec["normalized"],
            )
            for _, spec in sorted(added.items(), key=lambda kv: int(kv[0]))
        ]
    )
    return tok.to_str()


def checkpoint_files() -> dict[str, str]:
    """The tokenizer-side files of a checkpoint, as the published repository has them."""
    return {
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": (PUBLISHED_DIR / "tokenizer_config.json").read_text(encoding="utf-8"),
        "generation_config.json": (PUBLISHED_DIR / "generation_config.json").read_text(encoding="utf-8"),
    }
