"""Misspelt words put right toward the words the correction memory holds (``core.spelling``)."""

from __future__ import annotations

from core.spelling import Speller, edit_distance, inflected

KNOWN = Speller.of(["Who is the head gardener at Ormsby Hall?", "Where is the Fenwarren Observatory?"])
REAL = {"cast", "cost", "hall", "bell", "ball", "head"}  # words "the model's vocabulary holds whole"


def is_word(word: str) -> bool:
    return word in REAL


def test_misspelt_words_are_put_right_to_the_known_ones() -> None:
    put_right = KNOWN.respelled("who is the hed gardenr at ormsbyy?", is_word)
    assert put_right == "who is the head gardener at ormsby?"
    assert KNOWN.respelled("Where's the Fenwaren Obsevratory", is_word) == "Where's the fenwarren observatory"


def test_a_real_word_is_left_as_it_is_even_one_letter_from_a_known_one() -> None:
    speller = Speller.of(["How much does it cost?"])
    assert speller.respelled("When were the bells cast?", is_word) == "When were the bells cast?"
    assert speller.respelled("How much does it cots?", is_word) == "How much does it cost?"


def test_a_form_of_a_known_word_is_not_a_misspelling() -> None:
    speller = Speller.of(["How many kayaks does the club own?"])
    assert speller.respelled("the club's kayak", is_word) == "the club's kayak"
    assert inflected("kayaks", "kayak") and inflected("open", "opened") and not inflected("tunes", "runes")


def test_two_known_words_as_close_leave_the_word_as_typed() -> None:
    speller = Speller.of(["the bard", "the barn"])
    assert speller.respelled("the bar", is_word) == "the bar"


def test_short_words_numbers_and_other_scripts_are_left_alone() -> None:
    speller = Speller.of(["Is it on Route 66 to Köln?", "Когда открывается музей?"])
    assert speller.respelled("is it on rote 67 to koln", is_word) == "is it on route 67 to köln"
    assert speller.respelled("Когда открываеться музей?", is_word) == "Когда открывается музей?"
    assert speller.respelled("ot it", is_word) == "ot it"  # two letters: never


def test_edit_distance_counts_a_swap_as_one_and_stops_past_its_limit() -> None:
    assert edit_distance("dose", "does", 1) == 1
    assert edit_distance("observatry", "observatory", 2) == 1
    assert edit_distance("gardener", "xxxxxxxxxxxxxxx", 2) == 3


def test_hostile_text_comes_back_whole() -> None:
    """10,000 unknown words, control characters, right-to-left marks: each word put right or kept."""
    text = " ".join(["qzxv", "\u202eowt\u202c", "\x00hed", "gardenr"] * 2500)
    out = KNOWN.respelled(text, is_word)
    assert out.count("gardener") == 2500 and out.count("qzxv") == 2500
    assert out.count("\u202e") == 2500 and out.count("\x00") == 2500
    assert Speller.of([]).respelled("anything at all", is_word) == "anything at all"
    one_word = "gardener" + "x" * 10_000  # no word: left as it is, not cut into 10^8 forms
    assert KNOWN.respelled(one_word, is_word) == one_word
