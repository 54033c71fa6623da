"""The plugin's ``phi4_flash`` reasoning parser, through vLLM's registry, on the tiny tokenizer:
whole outputs and token-by-token streams give the same split."""

from __future__ import annotations

import pytest

CASES = [
    ("<think>add 2 and 3</think>It is 5.", "add 2 and 3", "It is 5."),
    ("plain answer", None, "plain answer"),
    ("<think>x</think>", "x", None),
    ("<think>unfinished", "unfinished", None),
    ("no opening tag</think>answer", None, "no opening tag</think>answer"),
]


@pytest.fixture(scope="module")
def parser_and_tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer
    from vllm.reasoning import ReasoningParserManager

    import vllm_sambay

    vllm_sambay.register()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    return ReasoningParserManager.get_reasoning_parser("phi4_flash"), tok


def test_registered_by_the_plugin(parser_and_tokenizer):
    from vllm.reasoning import ReasoningParserManager

    assert "phi4_flash" in ReasoningParserManager.list_registered()
    parser_cls, tok = parser_and_tokenizer
    parser = parser_cls(tok)
    assert tok.convert_ids_to_tokens([parser.start_token_id, parser.end_token_id]) == ["<think>", "</think>"]


@pytest.mark.parametrize("text,reasoning,content", CASES)
def test_whole_and_streamed_agree(parser_and_tokenizer, text, reasoning, content):
    parser_cls, tok = parser_and_tokenizer
    assert parser_cls(tok).extract_reasoning(text, None) == (reasoning, content)
    ids = tok.encode(text, add_special_tokens=False)
    parser, r_out, c_out, prev_text = parser_cls(tok), "", "", ""
    for i in range(len(ids)):
        cur_text = tok.decode(ids[: i + 1])
        delta = parser.extract_reasoning_streaming(
            prev_text, cur_text, cur_text[len(prev_text) :], ids[:i], ids[: i + 1], ids[i : i + 1]
        )
        if delta is not None:
            r_out += delta.reasoning or ""
            c_out += delta.content or ""
        prev_text = cur_text
    assert (r_out or None, c_out or None) == (reasoning, content)


def test_reasoning_tokens_counted(parser_and_tokenizer):
    parser_cls, tok = parser_and_tokenizer
    ids = tok.encode("<think>a b c</think>done", add_special_tokens=False)
    inside = len(tok.encode("a b c", add_special_tokens=False))
    assert parser_cls(tok).count_reasoning_tokens(ids) == inside
