"""🔁 pairs: stored (SQLite and PostgreSQL), exported for DPO, erased by /forget, picked in ``iris chat``.

The chat platforms' buttons are in tests/telegram/test_again.py and tests/discord/test_discord_again.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.app import App
from bots.render import CHOICE_QUESTION, choice_card
from core.choices import ALREADY, SAME, STALE, WRITING, AgainRefused, AnswerPair, Pick
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone, Timings
from finetune.feedback import Pseudonyms, export_feedback
from storage.choices import SqlAnswerChoices, picked
from storage.database import make_engine
from storage.repository import SqlStore

ADA = Person("telegram", "71", "Ada")
BOB = Person("telegram", "72", "Bob")
CHAT = ChatRef("telegram", "71")
IRIS = str(Path(sys.executable).with_name("iris"))


def conversation(store: SqlStore, question: str, reply: str, message_id: str = "1") -> int:
    receipt = store.record_user_turn(
        CHAT, ADA, text=question, from_voice=False, message_id=message_id, shared_history=False
    )
    return store.record_reply(receipt.conversation_id, receipt.turn_id, reply, "smol", Timings())


def written(choices: SqlAnswerChoices, reply_id: int, person: Person, second: str) -> AnswerPair:
    pair = choices.start(reply_id, person, datetime.now(UTC) - timedelta(minutes=3))
    assert pair is not None and choices.finish(pair, second, "smol-2")
    return pair


# --- storage ------------------------------------------------------------------------------


def test_one_second_answer_per_reply_claimed_written_and_picked(store: SqlStore) -> None:
    choices = SqlAnswerChoices(store.engine)
    reply_id = conversation(store, "Name a sea.", "The Baltic Sea.")
    question = choices.question(reply_id)
    assert question is not None and question.text == "Name a sea."
    assert choices.question(question.turn_id) is None  # a person's turn is not a reply

    stale = datetime.now(UTC) - timedelta(minutes=3)
    pair = choices.start(reply_id, ADA, stale)
    assert pair is not None and pair.second is None and pair.first == "The Baltic Sea." and pair.person == ADA
    assert pair.chat == CHAT
    assert choices.start(reply_id, BOB, stale) is None  # being written: no second writer
    # A claim older than ``stale`` was lost with a stopped process: the next press takes it over,
    # and the stopped writer (were it alive after all) can no longer store its answer.
    taken = choices.start(reply_id, BOB, datetime.now(UTC) + timedelta(seconds=1))
    assert taken is not None and taken.person == BOB and taken.id == pair.id
    assert not choices.finish(pair, "Too late.", "smol")
    assert choices.finish(taken, "The North Sea.", "smol-2")
    assert (
        choices.start(reply_id, ADA, datetime.now(UTC) + timedelta(seconds=1)) is None
    )  # written: never again

    assert choices.decide(taken.id, Pick.SECOND)
    assert choices.decide(taken.id, Pick.FIRST)  # changed
    found = choices.pair_of(reply_id)
    assert found is not None and (found.second, found.model_version, found.pick) == (
        "The North Sea.",
        "smol-2",
        Pick.FIRST,
    )
    [record] = picked(store.engine)
    assert (record.reply_id, record.first, record.second, record.pick) == (
        reply_id,
        "The Baltic Sea.",
        "The North Sea.",
        Pick.FIRST,
    )
    assert choices.pair(999_999) is None and not choices.decide(999_999, Pick.FIRST)


def test_a_dropped_claim_frees_the_reply_and_forget_deletes_the_persons_pairs(store: SqlStore) -> None:
    choices = SqlAnswerChoices(store.engine)
    first = conversation(store, "Name a sea.", "The Baltic Sea.", "1")
    second = conversation(store, "Name a river.", "The Rhine.", "2")
    stale = datetime.now(UTC) - timedelta(minutes=3)
    pair = choices.start(first, ADA, stale)
    assert pair is not None
    choices.drop(pair)  # nothing was written (a failure, or the same answer twice)
    assert choices.pair_of(first) is None and choices.start(first, ADA, stale) is not None
    written(choices, second, BOB, "The Danube.")

    assert choices.forget(BOB) == [second]
    assert choices.pair_of(second) is None and choices.pair_of(first) is not None
    assert choices.forget(Person("telegram", "nobody")) == []
    store.forget(ADA)  # her turns go, and the pair on her reply with them
    assert choices.pair_of(first) is None


# --- the DPO export -------------------------------------------------------------------------


def test_picked_pairs_become_dpo_rows_and_their_picks_freeze(
    store: SqlStore, database_url: str, tmp_path: Path
) -> None:
    choices = SqlAnswerChoices(store.engine)
    sea = conversation(store, "Name a sea.", "The Baltic Sea.", "1")
    river = conversation(store, "Name a river, ada@example.com.", "The Rhine.", "2")
    lake = conversation(store, "Name a lake.", "Lake Geneva.", "3")
    for reply_id, second, pick in ((sea, "The North Sea.", Pick.SECOND), (river, "The Danube.", Pick.FIRST)):
        choices.decide(written(choices, reply_id, ADA, second).id, pick)
    neither = written(choices, lake, BOB, "Lake Como.")
    choices.decide(neither.id, Pick.NEITHER)
    unpicked = conversation(store, "Name a bay.", "Hudson Bay.", "4")
    written(choices, unpicked, ADA, "Biscay.")

    name = Pseudonyms(b"k" * 32)
    manifest = export_feedback(database_url, tmp_path / "out", scrub=True, pseudonyms=name)

    rows = [json.loads(line) for line in (tmp_path / "out" / "dpo.jsonl").read_text().splitlines()]
    meta = [json.loads(line) for line in (tmp_path / "out" / "dpo_meta.jsonl").read_text().splitlines()]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("The North Sea.", "The Baltic Sea."),  # picked 2: the second answer is chosen
        ("The Rhine.", "The Danube."),  # picked 1: the reply is chosen
    ]
    assert rows[0]["prompt"][-1] == {"role": "user", "content": "Name a sea."}
    assert rows[1]["prompt"][-1]["content"] == "Name a river, [email]."  # scrubbed as other feedback is
    assert rows[1]["prompt"][:2] == [  # the conversation up to the question, as the model saw it
        {"role": "user", "content": "Name a sea."},
        {"role": "assistant", "content": "The Baltic Sea."},
    ]
    assert [m["turns"][-1] for m in meta] == [sea, river] and all(
        name("telegram", "71") in m["people"] for m in meta
    )
    assert manifest.counts["dpo"] == 2 and manifest.excluded["choices_neither"] == 1

    # Used by an export: what was trained on stays what the person said. Unused ones still change.
    assert not choices.decide(neither.id, Pick.FIRST)
    sea_pair = choices.pair_of(sea)
    assert sea_pair is not None and sea_pair.exported and sea_pair.pick is Pick.SECOND
    unpicked_pair = choices.pair_of(unpicked)
    assert unpicked_pair is not None and choices.decide(unpicked_pair.id, Pick.FIRST)


def test_pairs_of_people_who_did_not_consent_are_left_out(
    store: SqlStore, database_url: str, tmp_path: Path
) -> None:
    choices = SqlAnswerChoices(store.engine)
    sea = conversation(store, "Name a sea.", "The Baltic Sea.")
    choices.decide(written(choices, sea, BOB, "The North Sea.").id, Pick.SECOND)
    store.set_consent(BOB, False)  # he picked on Ada's reply, and said no
    manifest = export_feedback(database_url, tmp_path / "out")
    assert manifest.counts["dpo"] == 0 and manifest.excluded["no_consent"] == 1
    assert (tmp_path / "out" / "dpo.jsonl").read_text() == ""
    pair = choices.pair_of(sea)
    assert pair is not None and not pair.exported


# --- the service, the real model, /forget ----------------------------------------------------


async def ask(app: App, person: Person, text: str) -> int:
    message = IncomingMessage(ChatRef(person.platform, person.user_id), person, text=text)
    done = [e.turn_id async for e in app.service.replies.handle(message) if isinstance(e, ReplyDone)]
    return done[0]


async def another(app: App, person: Person, reply_id: int) -> AnswerPair:
    """The second answer to ``reply_id`` (asked again while the small model's two samples are equal)."""
    for _ in range(4):
        writing = await app.service.again.ask(person, reply_id)
        try:
            return await writing
        except AgainRefused as refused:
            assert str(refused) == SAME
    raise AssertionError("four samples all came out the same")


async def test_forget_erases_the_pairs_and_their_dpo_rows_even_for_someone_who_only_picked(
    app: App, tmp_path: Path
) -> None:
    reply_id = await ask(app, ADA, "Tell me a story about a dragon.")
    pair = await another(app, BOB, reply_id)  # Bob never wrote a word: he only asked for another answer
    assert pair.second and pair.person.user_id == BOB.user_id
    with pytest.raises(AgainRefused, match=ALREADY):
        await app.service.again.ask(ADA, reply_id)
    with pytest.raises(AgainRefused, match="Only the person who asked"):
        await app.service.again.choose(ADA, pair.id, Pick.FIRST)
    assert await app.service.again.choose(BOB, pair.id, Pick.SECOND) == "Thanks! You chose answer 2."

    out = tmp_path / "export"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env["IRIS_DATA_DIR"] = str(app.settings.data_dir)
    result = subprocess.run(
        [IRIS, "feedback", "export", "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    assert row["chosen"][0]["content"] == pair.second.strip()

    report = await app.service.privacy.forget(BOB)
    assert report.turns == 0 and report.copies is not None and report.copies.rows > 0
    assert (out / "dpo.jsonl").read_text() == "" and (out / "dpo_meta.jsonl").read_text() == ""
    assert SqlAnswerChoices(app.store.engine).pair_of(reply_id) is None
    assert json.loads((out / "manifest.json").read_text())["counts"]["dpo"] == 0


async def test_a_claim_left_by_a_killed_process_is_written_again_after_it_goes_stale(app: App) -> None:
    """kill -9 while the second answer was written: the press had been answered, no pair came, and the
    claim stays. For ``STALE`` a 🔁 (in any process, after a restart too) is told it is being written;
    then the next 🔁 writes it."""
    from sqlalchemy import update

    from storage.tables import AnswerChoiceRow

    reply_id = await ask(app, ADA, "Tell me a story about a dragon.")
    choices = SqlAnswerChoices(app.store.engine)
    assert choices.start(reply_id, ADA, datetime.now(UTC)) is not None  # the killed process's claim
    with pytest.raises(AgainRefused, match=WRITING):
        await app.service.again.ask(ADA, reply_id)
    with app.store.engine.begin() as connection:  # ... STALE later
        old = datetime.now(UTC) - STALE - timedelta(seconds=1)
        connection.execute(update(AnswerChoiceRow).values(created_at=old))
    pair = await another(app, ADA, reply_id)
    stored = choices.pair_of(reply_id)
    assert pair.second and stored is not None and stored.second == pair.second


# --- iris chat ----------------------------------------------------------------------------------


def test_the_console_asks_again_and_picks(tmp_path: Path, served_gguf: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env |= {"IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf)}
    env["IRIS_GENERATION_MAX_TOKENS"] = "48"
    script = "\n".join(["/again", "Tell me a story about a dragon.", "/again", "2", "/again", "n", "/quit"])
    result = subprocess.run(
        [IRIS, "chat"], env=env, input=script + "\n", capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "(nothing to answer again yet)" in out
    assert f"{CHOICE_QUESTION}\n\n1: " in out and "\n\n2: " in out
    assert "(Thanks! You chose answer 2.)" in out
    assert f"({ALREADY})" in out
    assert "(Thanks! Noted that neither answer is better.)" in out  # the pair shown last is still open
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'iris.db'}")
    [record] = picked(engine)
    engine.dispose()
    assert record.pick is Pick.NEITHER and record.second.strip() in out


# --- the card ---------------------------------------------------------------------------------------


def test_the_card_fits_the_limit_cutting_whole_words_and_never_inside_an_escape() -> None:
    long = "word " * 1000
    card = choice_card("Short answer.", long, 200)
    assert len(card) <= 200 and card.startswith(f"{CHOICE_QUESTION}\n\n1: Short answer.\n\n2: word word")
    assert card.endswith("word…")
    html = choice_card("a & b " * 100, "c & d " * 100, 300, lambda t: t.replace("&", "&amp;"))
    assert len(html) <= 300 and "&am…" not in html and html.count("&amp;") == html.count("&")
    assert choice_card("Yes.", "No.", 4096) == f"{CHOICE_QUESTION}\n\n1: Yes.\n\n2: No."
