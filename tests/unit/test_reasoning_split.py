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
