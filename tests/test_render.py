from bots.render import EditPacer, split_message


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
