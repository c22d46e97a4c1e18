"""Terminal output as text: UTF-8 split across reads, invalid bytes, frame pieces, the
scrollback ring."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from virtwire.termio import OutputDecoder, Scrollback, pieces


def test_a_character_split_across_reads_comes_out_whole() -> None:
    data = "héllo 世界 🙂".encode()
    decoder = OutputDecoder()
    out = [decoder.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) == "héllo 世界 🙂"
    assert "\ufffd" not in "".join(out)
    # nothing is emitted for the first bytes of a 4-byte character
    emoji = "🙂".encode()
    assert [decoder.feed(emoji[:2]), decoder.feed(emoji[2:])] == ["", "🙂"]


def test_invalid_bytes_become_replacement_characters() -> None:
    decoder = OutputDecoder()
    assert decoder.feed(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"
    assert decoder.feed(b"\xe4\xb8") == ""
    assert decoder.flush() == "\ufffd"  # the stream ended inside a character


@given(st.text(), st.lists(st.integers(min_value=0, max_value=64), max_size=20))
def test_any_split_decodes_like_the_whole(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    decoder = OutputDecoder()
    out, last = [], 0
    for point in [*points, len(data)]:
        out.append(decoder.feed(data[last:point]))
        last = point
    out.append(decoder.flush())
    assert "".join(out) == text


def test_pieces_bound_the_frame_size() -> None:
    assert pieces("abc", 5) == ["abc"]
    assert pieces("abcdefg", 3) == ["abc", "def", "g"]


def test_scrollback_keeps_the_last_bytes_and_never_a_broken_character() -> None:
    ring = Scrollback(10)
    ring.add(b"0123456789abcdef")
    assert ring.text() == "6789abcdef" and len(ring) == 10
    ring = Scrollback(7)
    ring.add("ab世界".encode())  # 8 bytes: only "a" is dropped
    assert ring.text() == "b世界"
    ring = Scrollback(5)
    ring.add("ab世界".encode())  # the ring cuts into 世
    assert ring.text() == "界"  # the 2 bytes left of 世 are dropped, not shown as U+FFFD
    ring = Scrollback(64)
    ring.add("x世".encode()[:-1])  # a character not complete yet is held back
    assert ring.text() == "x"
    ring.add("世".encode()[-1:])
    assert ring.text() == "x世"
    assert Scrollback(0).text() == ""
