"""sambay-serve on a checkpoint of the published shape (tokenizer, eos list, 200064-row head): what the
model card's users meet. The tiny checkpoint's weights are random, so token-level behaviour is steered
with logit_bias / allowed_token_ids / structured outputs."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.engine
MODEL = "sambay-tiny"
CHAT = [{"role": "user", "content": "What is 2+3?"}]
NO_TOKEN = 200040  # a head row the tokenizer has no token for (200029..200063)
END = 200020  # <|end|>, first in generation_config's eos list
# Tokens that can start "<think>": banning them keeps the model off the think branch.
THINK_OPENERS = {"27": -100, "141278": -100, "33313": -100}  # '<', '<t', '<th'


def test_sampled_ids_without_a_token_are_served(client):
    kwargs = dict(model=MODEL, messages=CHAT, max_tokens=4, temperature=0, logit_bias={str(NO_TOKEN): 100})
    r = client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    choice = r.choices[0]
    assert r.usage.completion_tokens == 4 and choice.finish_reason == "length"
    assert not choice.message.content  # no text for them, and no crash in the detokenizer
    assert [t.token for t in choice.logprobs.content] == [""] * 4
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 4
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_turn_ends_at_end_token(client):
    r = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=16, temperature=0, logit_bias={str(END): 100}
    )
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 1
    assert not r.choices[0].message.content  # <|end|> is not text


def test_answer_is_constrained_from_the_first_token_without_a_think_block(client):
    """The grammar covers the think block, so an output that does not think is constrained at once
    (with the grammar applied only after reasoning ended, the first tokens would be free text)."""
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        logit_bias=THINK_OPENERS,
        extra_body={"structured_outputs": {"regex": "[0-9]{1,3}"}},
    )
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert re.fullmatch("[0-9]{1,3}", message.content), message.content
    assert message.model_extra["reasoning"] is None


def test_a_think_block_in_the_grammar_is_split_the_same_streamed_or_not(client):
    """The grammar lets the output open a think block (the answer, a digit, banned at first); the
    random model never closes it, so all of it is reasoning, in both modes, counted alike."""
    soup = [33313, 881, 523, 808, 49631, 3037, 12845, 668, 20, 13, END]  # tag pieces, words, '5', <|end|>
    kwargs = dict(
        model=MODEL,
        messages=CHAT,
        max_tokens=40,
        temperature=0,
        logit_bias={"20": -100, "808": 6, "49631": 6, "3037": 6},
        extra_body={"structured_outputs": {"regex": "[0-9]"}, "allowed_token_ids": soup},
    )
    whole = client.chat.completions.create(**kwargs)
    message = whole.choices[0].message
    reasoning = message.model_extra["reasoning"]
    assert reasoning and message.content is None and message.model_extra["reasoning_content"] == reasoning
    # '<th' and 'ink' only open the block; every later token carries reasoning text
    assert whole.usage.completion_tokens_details.reasoning_tokens == whole.usage.completion_tokens - 2
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning") or "" for d in deltas) == reasoning
    assert not "".join(d.content or "" for d in deltas)
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == (
        whole.usage.completion_tokens_details.reasoning_tokens
    )


def test_json_option_the_grammar_cannot_express_is_a_400(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="disable_any_whitespace"):
        client.chat.completions.create(
            model=MODEL,
            messages=CHAT,
            max_tokens=4,
            extra_body={"structured_outputs": {"json": {"type": "object"}, "disable_any_whitespace": True}},
        )
