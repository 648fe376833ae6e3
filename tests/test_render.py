from datetime import UTC, datetime

import pytest

from bots.render import EditPacer, printable, review_card, split_message, split_rendered
from core.domain import Correction, CorrectionStatus, Person


def test_short_text_is_one_message() -> None:
    assert split_message("Hello there.", 2000) == ["Hello there."]


def test_long_reply_splits_at_paragraphs_under_the_limit() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 60 for i in range(10)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    pieces = split_message(text, 700)
    assert all(len(p) <= 700 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)
    assert " ".join(pieces).split() == text.split()  # nothing lost


def test_sentences_and_words_when_there_is_no_paragraph() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    pieces = split_message(text, 2000)
    assert all(len(p) <= 2000 for p in pieces) and len(pieces) > 1
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    pieces = split_message("x" * 4500, 2000)
    assert [len(p) for p in pieces] == [2000, 2000, 500]


def test_pacer_waits_between_edits_and_skips_unchanged_text() -> None:
    now = [0.0]
    pacer = EditPacer(1.0, clock=lambda: now[0])
    assert pacer.due("a")
    pacer.sent("a")
    now[0] = 0.5
    assert not pacer.due("ab")  # too soon
    now[0] = 1.2
    assert pacer.due("ab")
    pacer.sent("ab")
    now[0] = 5.0
    assert not pacer.due("ab ")  # nothing new to show


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ("plain text, kept\n\twith its breaks and tabs", "plain text, kept\n\twith its breaks and tabs"),
        ("é ü 漢字 👍 👨‍👩‍👧", "é ü 漢字 👍 👨👩👧"),  # letters and emoji stay; joiners go
        ("a\u202eb\u202cc \u2066d\u2069 \u200be\ufeff", "abc d e"),  # bidi overrides, zero widths
        ("clear\x1b[2J\x1b[31mred\r\x07\x9b1m", "clear[2J[31mred1m"),  # ANSI, CR, bell, C1 CSI
        ("tag\U000e0041\U000e0042 smuggled\U000e0100", "tag smuggled"),  # tag and variation selectors
        ("line\u2028para\u2029end", "line\npara\nend"),
    ],
)
def test_printable_drops_what_hides_or_rearranges_text(text: str, seen: str) -> None:
    assert printable(text) == seen


def test_split_rendered_keeps_each_escaped_piece_within_the_limit() -> None:
    text = " ".join(["a_b*c"] * 600)  # escaping doubles most of it
    escape = lambda piece: piece.replace("_", "\\_").replace("*", "\\*")  # noqa: E731
    pieces = split_rendered(text, 500, escape)
    assert all(len(piece) <= 500 for piece in pieces)
    assert " ".join(pieces).replace("\\", "").split() == text.split()


def correction(text: str, prompt: str = "Where should I send the money?") -> Correction:
    return Correction(
        7,
        3,
        Person("discord", "42", "Ann"),
        text,
        CorrectionStatus.PENDING,
        datetime.now(UTC),
        prompt,
        "To me.",
    )


def test_a_review_card_shows_the_whole_correction_within_the_limit() -> None:
    text = "\n".join(f"Line {i}: some careful answer text." for i in range(150)) + "\nThe poisoned last line."
    pieces = review_card(correction(text), 1880, bold=lambda s: f"**{s}**")
    assert len(pieces) > 2 and all(len(piece) <= 1880 for piece in pieces)
    assert pieces[0].startswith("**Correction #7** from Ann (discord)")
    assert pieces[-1].endswith("The poisoned last line.")
    assert "".join(text.split()) in "".join("".join(pieces).split())


def test_a_review_card_counts_the_hidden_characters_it_leaves_out() -> None:
    [card] = review_card(correction("ok\u202e fine\x1b[0m", prompt="why\u200b?"), 4000)
    assert "3 hidden characters" in card and "ok fine[0m" in card and "why?" in card
    assert "\u202e" not in card and "\x1b" not in card
