from datetime import UTC, datetime

import pytest
from markdown_it import MarkdownIt

from bots.render import printable, review_card
from bots.splitting import EditPacer, split_markdown, split_message, split_rendered
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


# --- code blocks in replies split across messages ---------------------------------------

_PARSER = MarkdownIt("commonmark")


def blocks(piece: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced code block in a piece, as a CommonMark renderer reads it."""
    return [(token.info.strip(), token.content) for token in _PARSER.parse(piece) if token.type == "fence"]


def program(lines: int, indent: str = "    ") -> str:
    return "\n".join(f"{indent}value_{i} = work(items[{i}])  # line {i} of the program" for i in range(lines))


@pytest.mark.parametrize("limit", [200, 333, 500, 2000])
def test_a_code_block_longer_than_several_pieces_is_closed_and_reopened_with_its_language(limit: int) -> None:
    code = "def main():\n" + program(80)
    text = f"Here is the program:\n\n```python\n{code}\n```\n\nThat is all."
    pieces = split_markdown(text, limit)

    assert len(pieces) >= 3 and all(len(piece) <= limit for piece in pieces)  # the fences fit too
    found = [blocks(piece) for piece in pieces]
    with_code = [piece for piece, block in zip(pieces, found, strict=True) if block]
    assert all(piece.startswith("```python\n") for piece in with_code[1:])  # reopened, with the language
    assert all(piece.endswith("\n```") for piece in with_code[:-1])  # closed where it was cut
    assert all(language == "python" for block in found for language, _ in block)
    # Every line once, indentation kept.
    assert "".join(content for block in found for _, content in block) == code + "\n"
    assert pieces[0].startswith("Here is the program:") and pieces[-1].endswith("That is all.")


def test_every_piece_fits_the_limit_with_the_fences_it_gains() -> None:
    # Lines of every length, so that some cut fills a piece to the last character before its fence.
    code = "\n".join("x" * (i % 37) + f" = {i}" for i in range(400))
    text = f"Intro.\n\n```js\n{code}\n```"
    for limit in range(60, 420, 7):
        pieces = split_markdown(text, limit)
        assert all(len(piece) <= limit for piece in pieces), limit
        assert "".join(content for piece in pieces for _, content in blocks(piece)) == code + "\n", limit


def test_a_fence_without_a_language_is_reopened_without_one() -> None:
    code = program(40)
    pieces = split_markdown(f"Output:\n```\n{code}\n```", 400)
    assert len(pieces) > 2
    assert all(piece.startswith("```\n") for piece in pieces[1:])
    assert all(block == [("", block[0][1])] for block in map(blocks, pieces))


def test_backticks_inside_a_longer_fence_do_not_end_the_block() -> None:
    inner = "\n".join(f"Step {i}: run `make test`, then\n```sh\necho {i}\n```" for i in range(30))
    text = f"The README says:\n\n````markdown\n{inner}\n````\n\nDone."
    pieces = split_markdown(text, 300)
    assert len(pieces) > 3 and all(len(piece) <= 300 for piece in pieces)
    assert all(piece.startswith("````markdown\n") for piece in pieces[1:-1])
    assert "".join(content for piece in pieces for _, content in blocks(piece)) == inner + "\n"
    assert pieces[-1].endswith("Done.")


def test_text_right_after_a_fence_is_not_reopened_as_code() -> None:
    code = program(12)
    text = f"Look:\n```python\n{code}\n```\nThis line follows the fence directly. " + "More words here. " * 20
    pieces = split_markdown(text, len(f"Look:\n```python\n{code}\n```") + 5)
    assert blocks(pieces[0]) == [("python", code + "\n")]  # cut after the closing fence: nothing added
    assert all(not blocks(piece) and "```" not in piece for piece in pieces[1:])
    assert pieces[1].startswith("This line follows the fence directly.")


def test_a_cut_just_before_the_closing_fence_adds_no_empty_block() -> None:
    code = program(10)
    # The block's own closing fence (indented, as in a list item) is longer than the one added:
    # the cut falls right before it, and the added fence takes its place.
    text = f"```python\n{code}\n   ```\nAfter."
    pieces = split_markdown(text, len(f"```python\n{code}\n```"))
    assert pieces == [f"```python\n{code}\n```", "After."]


def test_a_short_block_moves_whole_to_the_next_piece_rather_than_being_cut() -> None:
    prose = " ".join(f"Sentence {i} explains the idea." for i in range(12))
    code = "\n\n".join(program(6).split("\n"))  # blank lines: the best breaks are inside the block
    pieces = split_markdown(f"{prose}\n```python\n{code}\n```", len(prose) + 200)
    assert pieces == [prose, f"```python\n{code}\n```"]


def test_plain_splitting_adds_no_fences() -> None:
    text = f"```python\n{program(40)}\n```"
    assert split_message(text, 500)[1].startswith("value_")  # review cards and notices: as written


def test_triple_backticks_inline_open_no_block() -> None:
    text = "\n".join(f"```x = {i}``` is inline code in line {i}, not a fence." for i in range(40))
    pieces = split_markdown(text, 300)
    assert len(pieces) > 3 and not any(blocks(piece) for piece in pieces)
    assert "\n".join(pieces) == text  # nothing added
