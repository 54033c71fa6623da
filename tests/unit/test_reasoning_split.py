"""The <think> splitter, whole and streamed in arbitrary pieces."""

from __future__ import annotations

import pytest

from sambay_server.reasoning import StreamSplitter, split

CASES = [
    ("<think>add 2 and 3</think>It is 5.", "add 2 and 3", "It is 5."),
    ("plain answer", None, "plain answer"),
    ("  <think>x</think>", "x", ""),
    ("<think>unfinished", "unfinished", ""),
    ("no opening tag</think>answer", None, "no opening tag</think>answer"),
    ("<thinking is not a tag", None, "<thinking is not a tag"),
]


@pytest.mark.parametrize("text,reasoning,content", CASES)
def test_split_whole(text, reasoning, content):
    assert split(text) == (reasoning, content)


@pytest.mark.parametrize("text,reasoning,content", CASES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_stream_in_pieces_equals_whole(text, reasoning, content, size):
    s = StreamSplitter()
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    r_out, c_out = "", ""
    for i, piece in enumerate(pieces):
        r, c = s.feed(piece, final=i == len(pieces) - 1)
        r_out, c_out = r_out + r, c_out + c
    assert (r_out or None, c_out) == (reasoning, content)


def test_partial_close_tag_is_held_back_until_decided():
    s = StreamSplitter()
    assert s.feed("<think>abc</th") == ("abc", "")
    assert s.feed("ink>done", final=True) == ("", "done")


def test_full_chat_response_splits_reasoning_and_counts_its_tokens():
    from types import SimpleNamespace

    from sambay_server.app import Settings, _full_response

    end_think = 7
    out = SimpleNamespace(index=0, text="<think>2+3 is 5</think>Five.", token_ids=[5, 1, 2, 3, end_think, 9, 4],
                          logprobs=None, finish_reason="stop")
    final = SimpleNamespace(outputs=[out], prompt_token_ids=[1, 2, 3])
    state = SimpleNamespace(settings=Settings(model_name="m", max_model_len=64), tokenizer=None,
                            end_think_id=end_think)
    body = SimpleNamespace(include_reasoning=True, top_logprobs=None)
    resp = _full_response(state, body, final, "id", 0, chat=True)
    msg = resp["choices"][0]["message"]
    assert (msg["reasoning"], msg["reasoning_content"], msg["content"]) == ("2+3 is 5", "2+3 is 5", "Five.")
    assert resp["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert resp["usage"]["completion_tokens"] == 7 and resp["usage"]["prompt_tokens"] == 3
    body.include_reasoning = False
    msg = _full_response(state, body, final, "id", 0, chat=True)["choices"][0]["message"]
    assert msg["content"] == out.text and "reasoning" not in msg
