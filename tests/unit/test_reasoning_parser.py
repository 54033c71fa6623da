"""The ``phi4_flash`` reasoning parser on the published tokenizer, where ``<think>`` / ``</think>`` are
plain text: whole outputs and streams give the same split however the real tokenizer cuts them, the
token-id views (structured-output gate, reasoning token count) agree with the text, and the
structured-output grammar accepts exactly the outputs whose split content satisfies the constraint."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllm_sambay.reasoning import Phase, locate

ANSWER = Phase.ANSWER

# (output, reasoning, content): the whole-text split the parser promises.
CASES = [
    ("<think>add 2 and 3</think>It is 5.", "add 2 and 3", "It is 5."),
    ("<think>\nLet me think.</think>\n\nThe answer is 5.", "\nLet me think.", "\n\nThe answer is 5."),
    ("plain answer", None, "plain answer"),
    ("\n\nplain answer", None, "\n\nplain answer"),
    ("  \n<think>x</think>y", "x", "y"),  # whitespace before the opening tag is dropped
    ("<think>x</think>", "x", None),
    ("<think></think>answer", None, "answer"),
    ("<think>unfinished", "unfinished", None),
    ("<think>unfinished, cut in a tag </th", "unfinished, cut in a tag ", None),  # a tag's start is no text
    ("<think>a < b and c </thought> d", "a < b and c </thought> d", None),
    ("no opening tag</think>answer", None, "no opening tag</think>answer"),  # a stray closing tag is content
    ("<thinking>not our tag</thinking>", None, "<thinking>not our tag</thinking>"),
    ("<think>one</think>two</think>three", "one", "two</think>three"),
    ("<th", None, "<th"),  # ended before it could open a block
    ("", None, None),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    """The tokenizer vLLM serves for the checkpoint (through the plugin's registration)."""
    import vllm_sambay

    vllm_sambay.register()
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def parser_cls(tokenizer):
    from vllm.reasoning import ReasoningParserManager

    return ReasoningParserManager.get_reasoning_parser("phi4_flash")


def test_registered_and_built_on_the_published_tokenizer(parser_cls, tokenizer):
    from vllm.reasoning import ReasoningParserManager

    assert "phi4_flash" in ReasoningParserManager.list_registered()
    parser_cls(tokenizer)  # the old parser refused this tokenizer: no <think> token in it
    assert tokenizer.convert_tokens_to_ids("<think>") in (None, tokenizer.unk_token_id)
    # the tags are plain text, and their '>' merges with what follows
    assert tokenizer.encode("<think>\nhi", add_special_tokens=False) == [33313, 881, 523, 3686]
    assert tokenizer.encode("ok.</think>\n\n5", add_special_tokens=False) == [525, 8582, 49631, 3037, 20]


def test_vllm_serves_the_o200k_tokenization(tokenizer):
    """The published tokenizer_config names GPT2Tokenizer; transformers 5 would rebuild the tokenizer
    with GPT-2's pre-tokenizer. The plugin makes vLLM load tokenizer.json as written."""
    assert tokenizer.encode("hello world", add_special_tokens=False) == [24912, 2375]
    assert tokenizer.encode(" DON'T", add_special_tokens=False) == [153384]  # GPT-2's split: ' DON', "'", 'T'
    assert tokenizer.encode("x</think>\n\n", add_special_tokens=False)[-1] == 3037  # '>\n\n', one token


@pytest.mark.parametrize("text,reasoning,content", CASES)
def test_whole_output(parser_cls, tokenizer, text, reasoning, content):
    assert parser_cls(tokenizer).extract_reasoning(text, None) == (reasoning, content)


def stream(parser, tokenizer, ids, cuts):
    """Feed ``ids`` the way vLLM's serving layer does: text from the incremental detokenizer (which
    holds back incomplete UTF-8), grouped into deltas at ``cuts``; then the end-of-stream fallback.
    Returns the reasoning and content streamed, and the text phase after each delta."""
    from tokenizers.decoders import DecodeStream

    decoder = DecodeStream(skip_special_tokens=True)
    texts = []
    for token_id in ids:
        texts.append(decoder.step(tokenizer.backend_tokenizer, token_id) or "")
    reasoning, content, prev_text, prev_ids, ended = "", "", "", [], []
    bounds = sorted({0, *cuts, len(ids)})
    for a, b in zip(bounds, bounds[1:], strict=False):
        delta_ids, delta_text = ids[a:b], "".join(texts[a:b])
        cur_text, cur_ids = prev_text + delta_text, prev_ids + delta_ids
        msg = parser.extract_reasoning_streaming(prev_text, cur_text, delta_text, prev_ids, cur_ids, delta_ids)
        if msg is not None:
            reasoning += msg.reasoning or ""
            content += msg.content or ""
        ended.append(parser.is_reasoning_end_streaming(cur_ids, delta_ids))
        prev_text, prev_ids = cur_text, cur_ids
    content += parser.get_streaming_fallback_content(prev_text, None) or ""
    return reasoning or None, content or None, prev_text, ended


FRAGMENTS = [
    "<think>", "</think>", "<think>\n", "</think>\n\n", "\n", "\n\n", " ", ".", ",", "<", "</", "</th", "<th",
    "think", ">", ">\n", "x < y", "a>b", "answer", "Let me think", "2+3=5", "é", "😀", "日本", "DON'T", "{", "}",
    '{"a": 1}', "\t",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS), min_size=0, max_size=14),
    cut_seed=st.lists(st.integers(min_value=0, max_value=64), max_size=12),
)
def test_stream_equals_whole_for_any_cut(parser_cls, tokenizer, pieces, cut_seed):
    text = "".join(pieces)
    ids = tokenizer.encode(text, add_special_tokens=False)
    cuts = [c % (len(ids) + 1) for c in cut_seed]
    whole = parser_cls(tokenizer).extract_reasoning(text, None)
    reasoning, content, streamed_text, ended = stream(parser_cls(tokenizer), tokenizer, ids, cuts)
    assert streamed_text == text
    assert (reasoning, content) == whole, (text, ids, cuts)
    if ended:  # the front end's phase after the last delta is the whole text's
        assert ended[-1] == (locate(text).phase is ANSWER)
    # Where vLLM asks with ids only (the engine's structured-output gate, a fresh parser per request,
    # fed step by step), the answer is the text rule applied to the ids' text at every step.
    gate = parser_cls(tokenizer)
    for b in sorted({*cuts, len(ids)} - {0}):
        expected = locate(tokenizer.decode(ids[:b])).phase is ANSWER
        assert gate.is_reasoning_end_streaming(ids[:b], ids[b - 1 : b]) == expected, (text, b)


def test_tag_split_over_deltas_is_held_back_not_leaked(parser_cls, tokenizer):
    text = "<think>I reason.</think>\n\nDone"
    ids = tokenizer.encode(text, add_special_tokens=False)
    parser = parser_cls(tokenizer)
    seen = []
    prev_text, prev_ids = "", []
    for i in range(len(ids)):  # one token per delta: '.</', 'think', '>\n\n' arrive apart
        cur_ids = ids[: i + 1]
        cur_text = tokenizer.decode(cur_ids)
        msg = parser.extract_reasoning_streaming(
            prev_text, cur_text, cur_text[len(prev_text) :], prev_ids, cur_ids, ids[i : i + 1]
        )
        seen.append((msg.reasoning, msg.content) if msg else None)
        prev_text, prev_ids = cur_text, cur_ids
    assert all("<" not in (r or "") + (c or "") for r, c in filter(None, seen))
    assert "".join(r or "" for r, _ in filter(None, seen)) == "I reason."
    assert "".join(c or "" for _, c in filter(None, seen)) == "\n\nDone"


def test_reasoning_tokens_counted_on_real_tokens(parser_cls, tokenizer):
    parser = parser_cls(tokenizer)
    ids = tokenizer.encode("<think>\nLet me think.</think>\n\nThe answer is 5.", add_special_tokens=False)
    # '>\n' carries the reasoning's first newline and '.</' its last period: both count
    assert tokenizer.convert_ids_to_tokens(ids[2:7]) == [">Ċ", "Let", "Ġme", "Ġthink", ".</"]
    assert parser.count_reasoning_tokens(ids) == 5
    assert parser.count_reasoning_tokens(tokenizer.encode("no thinking here", add_special_tokens=False)) == 0
    assert parser.count_reasoning_tokens(tokenizer.encode("<think>abc def", add_special_tokens=False)) == 2
    assert parser.count_reasoning_tokens([200040, 200050]) == 0  # head rows with no token


def test_prompt_and_turn_boundaries(parser_cls, tokenizer):
    parser = parser_cls(tokenizer)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>a</think>b"}]
    history = tokenizer.apply_chat_template(chat + [{"role": "user", "content": "again"}], add_generation_prompt=True)
    history = list(history["input_ids"] if not isinstance(history, list) else history)
    # a closed think block in an earlier turn does not end this turn's reasoning
    assert not parser.is_reasoning_end(history)
    prefilled = history + tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    assert parser.is_reasoning_end(prefilled)  # the user prefilled an empty think block
    # special tokens are no text (vLLM's detokenizer skips them); <|tool|> is not special, so it is text
    thinking = tokenizer.encode("<think>a", add_special_tokens=False)
    assert not parser.is_reasoning_end([200021, 200020, *thinking]) and parser.is_reasoning_end([200023, *thinking])
    output = tokenizer.encode("<think>x</think>\n\nok", add_special_tokens=False)
    assert parser.extract_content_ids(output) == tokenizer.encode("ok", add_special_tokens=False)


# ---- structured outputs -------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}


def chat_request(**fields):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **fields)


@pytest.fixture(scope="module")
def grammar_for(tokenizer):
    """Compile a request's structured output the way vLLM's xgrammar backend does."""
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=200064, stop_token_ids=[200020, 199999])
    compiler = xgr.GrammarCompiler(info)

    def accepts(request, text: str) -> bool:
        matcher = xgr.GrammarMatcher(compiler.compile_structural_tag(request.structured_outputs.structural_tag))
        ids = tokenizer.encode(text, add_special_tokens=False)
        return all(matcher.accept_token(t) for t in ids) and matcher.accept_token(200020)

    return accepts


@pytest.mark.parametrize(
    "fields",
    [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
        {"structured_outputs": {"json": SCHEMA}},
    ],
    ids=["response_format", "structured_outputs"],
)
def test_grammar_covers_the_think_block_and_constrains_the_answer(parser_cls, tokenizer, grammar_for, fields):
    request = parser_cls(tokenizer).adjust_request(chat_request(**fields))
    assert request.response_format is None
    assert request.resolve_reasoning_ended(None, []) is True  # vLLM constrains from the first token
    for text, ok in [
        ('<think>\nthe user wants a</think>\n\n{"a": 1}', True),
        ('{"a": 1}', True),  # no think block: the answer is constrained from the first token
        ('<think>x < y </th not yet</think> {"a": 2}', True),
        ('\n<think>x</think>{"a": 2}', False),  # the think branch opens at the first character
        ('<think>x</think>\n\n\n\n\n\n\n\n\n{"a": 2}', False),  # at most 8 whitespace before the answer
        ('Sure! {"a": 1}', False),
        ('<think>x</think>{"b": 1}', False),
        ('<think>x</think>\n\n{"a": 1} and more', False),
        ("<think>never closed", False),
    ]:
        assert grammar_for(request, text) is ok, text
        if ok:  # what the grammar lets through splits into content that satisfies the schema
            _, content = parser_cls(tokenizer).extract_reasoning(text, None)
            assert json.loads(content) == {"a": json.loads(content)["a"]}


def test_other_constraint_kinds_are_wrapped(parser_cls, tokenizer, grammar_for):
    for fields, good, bad in [
        ({"structured_outputs": {"choice": ["yes", "no"]}}, "<think>hm</think>no", "maybe"),
        ({"structured_outputs": {"regex": "[0-9]+"}}, "42", "<think>x</think>forty"),
        ({"response_format": {"type": "json_object"}}, '<think>x</think>{"k": [1]}', "[1]"),
    ]:
        request = parser_cls(tokenizer).adjust_request(chat_request(**fields))
        assert grammar_for(request, good) and not grammar_for(request, bad), fields


def test_requests_without_constraint_or_reasoning_are_left_alone(parser_cls, tokenizer):
    plain = chat_request()
    assert parser_cls(tokenizer).adjust_request(plain).structured_outputs is None
    hidden = chat_request(structured_outputs={"json": SCHEMA}, include_reasoning=False)
    assert parser_cls(tokenizer).adjust_request(hidden).structured_outputs.json == SCHEMA


@pytest.mark.parametrize("option", ["disable_any_whitespace", "disable_additional_properties"])
def test_json_options_a_structural_tag_cannot_express_are_refused(parser_cls, tokenizer, option):
    request = chat_request(structured_outputs={"json": SCHEMA, option: True})
    with pytest.raises(ValueError, match=option):
        parser_cls(tokenizer).adjust_request(request)
