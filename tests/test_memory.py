"""The correction memory: an approved correction answers the next question that asks it, before any retrain.

Through the app as ``iris run`` builds it (real llama.cpp, the real all-MiniLM-L6-v2 GGUF, real
SQLite; PostgreSQL for the store), never asserting the small model's own words: a served reply
is the approved text, which is what a person sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from bots.app import App, build_app, build_memory
from bots.render import format_stats, review_card
from core.domain import AuditAction, ChatRef, CorrectionStatus, IncomingMessage, Person, ReplyDone, Timings
from core.embedding import Embedder
from core.memory import CorrectionMemory, MemoryConfig, MemoryMode
from core.question_kind import Kind, asks_something_else, kinds, looks_english
from finetune.lanes import contrasts
from finetune.teaching import every_wording
from storage.memory import SqlMemoryStore
from storage.repository import SqlStore
from tests.conftest import FIXTURES, make_settings

ANN = Person("telegram", "1", "Ann")  # asks, and corrects
BOB = Person("telegram", "2", "Bob")  # asks later, in another chat
ADMIN = "telegram:99"
QUESTION = "Who designed the Iris logo?"
ANSWER = "The Iris logo was designed by Odalys Fenwright in 2021."


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Embedder:
    from core.embedding import default_embedder

    return default_embedder(models_dir.parent)


@pytest.fixture
def app(tmp_path: Path, served_gguf: Path, embedder: Embedder) -> Iterator[App]:
    application = build_app(make_settings(tmp_path, served_gguf))
    assert application.service.memory is not None
    application.service.memory.embedder = embedder  # loaded once per session
    yield application
    application.close()


async def ask(app: App, person: Person, text: str, chat: str | None = None) -> ReplyDone:
    message = IncomingMessage(ChatRef("telegram", chat or person.user_id), person, text=text)
    done = [event async for event in app.service.replies.handle(message) if isinstance(event, ReplyDone)]
    assert len(done) == 1
    return done[0]


async def teach(app: App, answer: str = ANSWER, question: str = QUESTION) -> int:
    """Ann asks, marks the reply wrong with a better answer, and an admin approves it."""
    reply = await ask(app, ANN, question)
    await app.service.feedback.rate(ANN, reply.turn_id, up=False)
    correction = await app.service.feedback.correct(ANN, reply.turn_id, answer)
    await app.service.feedback.review(correction, approve=True, reviewer=ADMIN)
    return correction


async def test_an_approved_correction_answers_a_reworded_question_at_once(app: App) -> None:
    before = await ask(app, BOB, "Which designer created the logo for Iris?")
    assert before.memory is None and "Fenwright" not in before.text
    correction = await teach(app)

    after = await ask(app, BOB, "which designer created the logo for iris")
    assert after.text == ANSWER
    assert after.memory == (correction, "served")
    stored = app.store.get_turn(after.turn_id)
    assert stored is not None and stored.text == ANSWER
    # Admins see it: the review card, the figures, the audit trail.
    [decided] = [c for c in app.store.corrections(CorrectionStatus.APPROVED) if c.id == correction]
    assert decided.served == 1
    assert "Answered 1 later question from the correction memory" in review_card(decided, 4000)[0]
    stats = app.store.stats()
    assert stats.memory_served == 1
    assert "Answered from approved corrections: 1 as approved" in format_stats(stats)
    trail = [e for e in app.store.audit_entries() if e.action is AuditAction.MEMORY_ADD]
    assert [(e.actor, e.target) for e in trail] == [(ADMIN, f"correction:{correction}")]
    assert trail[0].details["wordings"] > 1  # the person's question and rule-made wordings


async def test_a_pending_correction_answers_nobody(app: App) -> None:
    reply = await ask(app, ANN, QUESTION)
    await app.service.feedback.correct(ANN, reply.turn_id, "The Iris logo was drawn by Mallory, who is great.")
    later = await ask(app, BOB, QUESTION)
    assert later.memory is None and "Mallory" not in later.text


async def test_unrelated_and_near_miss_questions_are_left_to_the_model(app: App) -> None:
    await teach(app)
    # Same subject, another question (cosine 0.76 and 0.63 with the taught wordings; the threshold is 0.80),
    # and near misses the embedding puts above it (0.90, 0.97) that ask for another kind of answer.
    for text in (
        "Where can I download the Iris logo?",
        "Who designed the Apple logo?",
        "When was the Iris logo redesigned?",
        "What colour is the Iris logo? Was it the 2019 one?",
        "hello!",
        "Tell me a joke",
    ):
        reply = await ask(app, BOB, text)
        assert reply.memory is None, text
        assert "Fenwright" not in reply.text, text


async def test_another_question_about_the_same_thing_asking_the_same_kind_is_left_to_the_model(
    app: App,
) -> None:
    correction = await teach(app)
    memory = app.service.memory
    assert memory is not None
    owner = "Who owns the Iris logo?"  # a person, like the taught question: the question check lets it by
    assert (await ask(app, BOB, owner)).memory is None
    stored = SqlMemoryStore(app.store.engine).memory_entries(memory.embedder.name)
    assert owner in {e.wording for e in stored if e.negative and e.correction_id == correction}
    assert (await ask(app, BOB, "who made the iris logo", chat="b2")).text == ANSWER  # rewordings still served
    # What the contrasts do: without them the embedding and the check alone serve the logo's designer.
    correction_row = next(c for c in app.store.corrections(CorrectionStatus.APPROVED) if c.id == correction)
    memory.contrasts = lambda question: []
    memory.learn(correction_row)
    assert (await ask(app, BOB, owner, chat="b3")).memory == (correction, "served")


async def test_corrections_indexed_before_contrasts_existed_get_them_at_the_next_start(
    app: App, embedder: Embedder
) -> None:
    correction = await teach(app)
    memory = app.service.memory
    assert memory is not None
    memory.contrasts = lambda question: []  # as an older Iris indexed it
    correction_row = next(c for c in app.store.corrections(CorrectionStatus.APPROVED) if c.id == correction)
    memory.learn(correction_row)
    store = SqlMemoryStore(app.store.engine)
    assert not [e for e in store.memory_entries(embedder.name) if e.negative]

    started = CorrectionMemory(store, embedder, MemoryConfig(), contrasts=contrasts)  # the next start
    assert started.sync() == 1
    negatives = {e.wording for e in store.memory_entries(embedder.name) if e.negative}
    assert "Who owns the Iris logo?" in negatives
    assert started.recall("Who owns the Iris logo?", "any") is None
    recalled = started.recall("Who designed the Iris logo?", "any")
    assert recalled is not None and recalled.answer == ANSWER  # the correction itself still served
    assert CorrectionMemory(store, embedder, MemoryConfig(), contrasts=contrasts).sync() == 0  # once


async def test_a_served_reply_marked_down_stops_answering_that_question(app: App) -> None:
    correction = await teach(app)
    # 0.90 and the same kind of answer (a person): served, wrongly; the question check cannot tell.
    near_miss = await ask(app, BOB, "Who approved the Iris logo?")
    assert near_miss.memory == (correction, "served")
    await app.service.feedback.rate(BOB, near_miss.turn_id, up=False)
    again = await ask(app, Person("telegram", "3", "Cy"), "who approved the Iris logo")
    assert again.memory is None
    assert (await ask(app, BOB, "Who made the Iris logo?", chat="b2")).text == ANSWER  # still what it answers
    # A 👎 on the taught question itself disputes the answer (✏️ and review), not the match.
    own = await ask(app, BOB, "Who designed the Iris logo?", chat="b3")
    await app.service.feedback.rate(BOB, own.turn_id, up=False)
    assert (await ask(app, BOB, "who designed the Iris logo", chat="b4")).memory == (correction, "served")


async def test_a_rejected_or_edited_correction_leaves_the_memory_at_once(app: App) -> None:
    correction = await teach(app)
    edited = "Odalys Fenwright and Tomasz Lerch designed the Iris logo."
    await app.service.feedback.review(correction, approve=True, reviewer=ADMIN, text=edited)
    assert (await ask(app, BOB, "Who made the Iris logo?")).text == edited
    await app.service.feedback.review(correction, approve=False, reviewer=ADMIN)
    reply = await ask(app, BOB, "Who made the Iris logo?", chat="b2")
    assert reply.memory is None and reply.text != edited
    actions = [e.action for e in app.store.audit_entries() if e.action.value.startswith("memory.")]
    assert actions == [AuditAction.MEMORY_ADD, AuditAction.MEMORY_ADD, AuditAction.MEMORY_DROP]


async def test_forget_removes_the_corrections_wordings_for_every_process(app: App, embedder: Embedder) -> None:
    await teach(app)
    # A second process on the same database, with its own memory.
    other = build_memory(app.settings, SqlStore(app.store.engine))
    assert other is not None
    other.embedder = embedder
    assert other.recall("Who made the Iris logo?", "any") is not None
    await app.service.privacy.forget(ANN)
    assert SqlMemoryStore(app.store.engine).memory_stamp(embedder.name) == (0, 0)
    assert other.recall("Who made the Iris logo?", "any") is None
    assert (await ask(app, BOB, "Who made the Iris logo?")).memory is None


async def test_a_fact_the_serving_model_knows_alone_is_left_to_it(app: App) -> None:
    await teach(app)
    model = app.generator.model_name
    assert app.service.memory is not None
    assert app.service.memory.recall("Who made the Iris logo?", model) is not None
    # Its gate found that this version recalls the fact by itself (finetune.gate's per-fact figures).
    with app.store.engine.begin() as connection:
        from sqlalchemy import update

        from storage.tables import ModelVersionRow

        facts = [{"question": QUESTION, "answer": ANSWER, "known": True}]
        connection.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.name == model)
            .values(metrics={"gate": {"facts": facts}})
        )
    fresh = build_memory(app.settings, app.store)
    assert fresh is not None
    assert fresh.recall("Who made the Iris logo?", model) is None  # left to the model that knows it
    assert fresh.recall("Who made the Iris logo?", "another-version") is not None  # still served to others
    assert len(SqlMemoryStore(app.store.engine).memory_entries(fresh.embedder.name)) > 0  # kept as data


async def test_corrections_approved_without_the_memory_are_indexed_on_start(
    tmp_path: Path, served_gguf: Path, embedder: Embedder
) -> None:
    off = build_app(make_settings(tmp_path, served_gguf, memory_enabled=False))
    try:
        assert off.service.memory is None
        await teach(off)
    finally:
        off.close()
    on = build_app(make_settings(tmp_path, served_gguf))
    try:
        assert on.service.memory is not None
        on.service.memory.embedder = embedder
        assert (await ask(on, BOB, "who designed the logo of Iris?")).text == ANSWER
    finally:
        on.close()


async def test_a_failing_memory_leaves_the_reply_to_the_model(app: App) -> None:
    await teach(app)

    class Broken:
        name = "broken"

        def embed(self, texts: object) -> object:
            raise RuntimeError("embedding model gone")

    assert app.service.memory is not None
    app.service.memory.embedder = Broken()  # type: ignore[assignment]
    reply = await ask(app, BOB, "Who made the Iris logo?")
    assert reply.memory is None and reply.text  # answered by the model, no traceback in the chat


def test_the_store_keeps_only_approved_corrections(store: SqlStore, embedder: Embedder) -> None:
    """SQLite and PostgreSQL: a correction rejected while it was being indexed stays out."""
    receipt = store.record_user_turn(
        ChatRef("telegram", "1"), ANN, text=QUESTION, from_voice=False, message_id=None, shared_history=False
    )
    reply = store.record_reply(receipt.conversation_id, receipt.turn_id, "Nobody.", "m", Timings())
    correction_id = store.add_correction(ANN, reply, ANSWER)
    memory = CorrectionMemory(SqlMemoryStore(store.engine), embedder, MemoryConfig())
    approved = store.review_correction(correction_id, True, ADMIN)
    store.review_correction(correction_id, False, ADMIN)  # rejected before the indexing wrote
    memory.learn(approved)
    assert SqlMemoryStore(store.engine).memory_stamp(embedder.name) == (0, 0)
    approved = store.review_correction(correction_id, True, ADMIN)
    assert memory.learn(approved) == 1  # no rule-made wordings given here: the question alone
    assert memory.recall("who designed the iris logo", "m") is not None
    store.forget(ANN)
    assert memory.recall("who designed the iris logo", "m") is None


# --- the question check (core.question_kind): a near miss asks another thing ----------------------

# (the stored question, a message about the same subject that asks something else): none of these
# is in the fact sets the check was designed on.
NEAR_MISSES = [
    ("Who wrote The Glass Meridian?", "When was The Glass Meridian published?"),
    ("Who wrote The Glass Meridian?", "Is The Glass Meridian being made into a film?"),
    ("Where was Halden Roe born?", "When was Halden Roe born?"),
    ("When was Halden Roe born?", "When did Halden Roe die?"),
    ("How many floors does the Corbel Tower have?", "Who built the Corbel Tower?"),
    ("How many floors does the Corbel Tower have?", "Why is the Corbel Tower leaning?"),
    ("When does the Vetch market open?", "When does the Vetch market close?"),
    ("When does the Vetch market open on Saturdays?", "when does the vetch market open on sundays"),
    ("Who won the 2022 Ardley marathon?", "Who won the 2023 Ardley marathon?"),
    ("What is the population of Sallowmere?", "Which county is Sallowmere in?"),
    ("Why did the Cobble line shut down?", "Where did the Cobble line run?"),
    ("How tall is Mount Keswin?", "Do you know who first climbed Mount Keswin?"),
    ("Does the Orrin pool have a sauna?", "How much does the Orrin pool cost?"),
    ("Where is the Orrin pool?", "How do I book a lane at the Orrin pool?"),
]
# (the stored question, the same question reworded: typos, lower case, no question mark, lead-ins).
REWORDINGS = [
    ("Who wrote The Glass Meridian?", "i wonder who the author of the glass meridian is"),
    ("Who wrote The Glass Meridian?", "The Glass Meridian - which writer penned it?"),
    ("When was the Corbel Tower built?", "What year did they finish buildng the Corbel Tower"),
    ("When was the Corbel Tower built?", "How old is the Corbel Tower?"),
    ("Where is the Vetch market?", "In which town is the Vetch market held?"),
    ("How many floors does the Corbel Tower have?", "corbel tower number of floors?"),
    ("How tall is Mount Keswin?", "Hey, what's the height of Mount Keswin"),
    ("Does the Orrin pool have a sauna?", "Is there a sauna at the Orrin pool?"),
    ("Why did the Cobble line shut down?", "How come the Cobble line closed"),
    ("Who won the 2022 Ardley marathon?", "Can you tell me the winner of the Ardley marathon in 2022?"),
    (
        "What is the Wi-Fi password at the Orrin pool?",
        "how do i get on the orrin pool wifi, whats the password",
    ),
    (
        "When does the Vetch market open on Saturdays?",
        "Quick question: what time does the Vetch market open on a saturday?",
    ),
    # A typo right after "how" says nothing about the kind (it is not "how do…", a manner).
    ("How many floors does the Corbel Tower have?", "how mny floors has the corbel tower"),
    ("How tall is Mount Keswin?", "how tal is mount keswin"),
]
# Not English: no kind, never blocked, even with a number the stored question lacks.
OTHER_LANGUAGES = [
    "¿Cuándo se publicó The Glass Meridian en 2019?",
    "Wann wurde The Glass Meridian 2019 veröffentlicht?",
    "Quand est-ce que The Glass Meridian a été publié ?",
    "Wanneer is The Glass Meridian gepubliceerd?",
    "Quando è stato pubblicato The Glass Meridian nel 2019?",
    "Quem escreveu The Glass Meridian em 2019?",
    "Когда вышла книга The Glass Meridian?",
    "The Glass Meridian はいつ出版されましたか？",
]


@pytest.mark.parametrize(("stored", "message"), NEAR_MISSES)
def test_a_near_miss_asks_something_else(stored: str, message: str) -> None:
    assert asks_something_else(message, [stored]) is not None


@pytest.mark.parametrize(("stored", "message"), REWORDINGS)
def test_a_rewording_asks_the_same_thing(stored: str, message: str) -> None:
    assert asks_something_else(message, [stored]) is None


@pytest.mark.parametrize("message", OTHER_LANGUAGES)
def test_another_language_is_never_blocked(message: str) -> None:
    assert not looks_english(message)
    assert kinds(message) == frozenset()
    assert asks_something_else(message, ["Who wrote The Glass Meridian?"]) is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Whose idea was the Corbel Tower?", Kind.PERSON),
        ("Which architect drew the Corbel Tower", Kind.PERSON),
        ("Do you know when the Corbel Tower was built?", Kind.TIME),
        ("What date is the Vetch market this year", Kind.TIME),
        ("whats the capital of sallowmere", Kind.PLACE),
        ("Can you tell me where the Vetch market is?", Kind.PLACE),
        ("How much is a ticket to the Orrin pool?", Kind.QUANTITY),
        ("Is the Orrin pool heated?", Kind.YES_NO),
        ("Can I bring my dog to the Vetch market?", Kind.YES_NO),
        ("Why is the Corbel Tower leaning?", Kind.REASON),
        ("How do I get to the Vetch market?", Kind.MANNER),
    ],
)
def test_the_kind_of_answer_a_question_asks_for(text: str, kind: Kind) -> None:
    assert kind in kinds(text)


@pytest.mark.parametrize(
    "text", ["What colour is the Orrin pool?", "Tell me about the Corbel Tower.", "hi", "how mny floors"]
)
def test_a_question_of_no_known_kind_has_none(text: str) -> None:
    assert kinds(text) == frozenset()


def test_the_memory_answers_rewordings_and_not_near_misses(store: SqlStore, embedder: Embedder) -> None:
    """SQLite and PostgreSQL, the real embedding, the rule-made wordings ``iris run`` indexes."""
    memory = CorrectionMemory(SqlMemoryStore(store.engine), embedder, MemoryConfig(), every_wording)
    chat = ChatRef("telegram", "1")
    turn = {"from_voice": False, "message_id": None, "shared_history": False}
    taught = {}
    for question, answer in (
        ("Who wrote the novel The Glass Meridian?", "The Glass Meridian was written by Ottoline Brask."),
        ("When does the Vetch market open on Saturdays?", "The Vetch market opens at 7:15 on Saturdays."),
    ):
        receipt = store.record_user_turn(chat, ANN, text=question, **turn)
        reply = store.record_reply(receipt.conversation_id, receipt.turn_id, "Nobody knows.", "m", Timings())
        correction = store.review_correction(store.add_correction(ANN, reply, answer), True, ADMIN)
        memory.learn(correction)
        taught[question] = answer

    for question, answer in taught.items():
        served = memory.recall(question.lower().rstrip("?"), "m")
        assert served is not None and served.answer == answer and served.mode is MemoryMode.SERVED
    for message in ("When was The Glass Meridian published?", "When does the Vetch market close on Saturdays?"):
        assert memory.recall(message, "m") is None, message
    # The embedding alone (the check off) serves them the wrong fact: the check is what keeps them out.
    memory.check_question = False
    assert memory.recall("When was The Glass Meridian published?", "m") is not None


# --- the answer check and misspelt words (issue 25): examples written after both were chosen -------

# (question, approved answer, rewordings served, near misses of the same kind left to the model).
# None of these is in the fact sets ANSWER_MARGIN was chosen on.
SAME_KIND = [
    (
        "How much does a pint cost at the Quarry Tap?",
        "A pint at the Quarry Tap costs 4 pounds 20.",
        ["what's the price of a pint at the quarry tap", "How much is a pint in the Quarry Tap?"],
        ["How much does a burger cost at the Quarry Tap?", "How much is the quiz entry at the Quarry Tap?"],
    ),
    (
        "How many beds does the Tollan Hostel have?",
        "The Tollan Hostel has 46 beds.",
        ["What's the number of beds at the Tollan Hostel?", "tollan hostel how many beds"],
        ["How many showers does the Tollan Hostel have?", "How many bikes does the Tollan Hostel rent out?"],
    ),
    (
        "When does the Harwick library close on Fridays?",
        "On Fridays the Harwick library closes at 6 pm.",
        ["what time does harwick library shut on a friday", "Harwick library Friday closing time"],
        ["When does the Harwick library host the book club on Fridays?"],
    ),
]


def _taught(store: SqlStore, embedder: Embedder, facts: list[tuple[str, str]]) -> CorrectionMemory:
    """A memory as ``iris run`` builds it (rule-made wordings and contrasts), each fact approved once."""
    memory = CorrectionMemory(SqlMemoryStore(store.engine), embedder, MemoryConfig(), every_wording, contrasts)
    turn = {"from_voice": False, "message_id": None, "shared_history": False}
    for question, answer in facts:
        receipt = store.record_user_turn(ChatRef("telegram", "1"), ANN, text=question, **turn)
        reply = store.record_reply(receipt.conversation_id, receipt.turn_id, "Nobody knows.", "m", Timings())
        memory.learn(store.review_correction(store.add_correction(ANN, reply, answer), True, ADMIN))
    return memory


def test_a_hostile_question_is_indexed_within_bounds_and_answers_only_itself(
    store: SqlStore, embedder: Embedder
) -> None:
    """SQLite and PostgreSQL: a correction whose question is huge, markup, emoji or another script is
    indexed by at most ``max_wordings`` + 1 wordings, and neither it nor a huge or invalid message
    (a lone surrogate) takes an ordinary question's answer away or serves it to something else."""
    answer = "The Corrabel Gardens open at 9 am."
    odd = {
        "How " + "very " * 4000 + "long is it?": "Long.",
        "Who is <script>alert(1)</script> this?": "Nobody.",
        "🙂🙂🙂 ???": "Smile.",
        "מי מאמן את הקבוצה?": "דנה.",
    }
    memory = _taught(store, embedder, [("When do the Corrabel Gardens open?", answer), *odd.items()])
    rows: dict[int, int] = {}
    for entry in SqlMemoryStore(store.engine).memory_entries(embedder.name):
        if not (entry.negative or entry.is_answer):
            rows[entry.correction_id] = rows.get(entry.correction_id, 0) + 1
    assert len(rows) == 5 and max(rows.values()) <= 1 + MemoryConfig().max_wordings
    served = memory.recall("what time do the corrabel gardens open", "m")
    assert served is not None and served.answer == answer
    for message in ["word " * 20000, "Who won the 1966 World Cup?", "\ud800"]:
        found = memory.recall(message, "m")
        assert found is None or found.answer != answer, message


def test_a_question_about_another_thing_of_the_same_kind_is_left_to_the_model(
    store: SqlStore, embedder: Embedder
) -> None:
    """SQLite and PostgreSQL: "How much does a burger cost?" is not answered with the pint's price."""
    memory = _taught(store, embedder, [(q, a) for q, a, _, _ in SAME_KIND])
    answers = {e.correction_id: e.wording for e in SqlMemoryStore(store.engine).memory_entries(embedder.name)}
    assert {a for _, a, _, _ in SAME_KIND} <= set(answers.values())  # each answer stored as a row
    for _, answer, rewordings, near_misses in SAME_KIND:
        for message in rewordings:
            served = memory.recall(message, "m")
            assert served is not None and served.answer == answer, message
        for message in near_misses:
            assert memory.recall(message, "m") is None, message
    # Without the answer check the embedding and the question check serve them the wrong fact.
    memory.answer_margin = 2.0
    assert all(memory.recall(m, "m") is not None for _, _, _, near in SAME_KIND for m in near)


def test_a_misspelt_rewording_is_put_right_and_served(store: SqlStore, embedder: Embedder) -> None:
    answer = "Entry to the Corrabel Gardens costs 6 pounds."
    memory = _taught(store, embedder, [("What is the entry fee for the Corrabel Gardens?", answer)])
    misspelt = [
        "what is the entry fee for the corabel gardns",
        "Corrabel Gardnes entry fee?",
        "whats the entery fee for corabel gardens",
    ]
    for message in misspelt:
        served = memory.recall(message, "m")
        assert served is not None and served.answer == answer, message
    # The words put right are what finds it: as typed, none is close enough.
    memory.respell = False
    assert [memory.recall(message, "m") for message in misspelt] == [None, None, None]


async def test_corrections_indexed_before_the_answer_check_get_their_answer_at_the_next_start(
    app: App, embedder: Embedder
) -> None:
    correction = await teach(app, "The Quarry Tap charges 4 pounds 20 for a pint.", SAME_KIND[0][0])
    store = SqlMemoryStore(app.store.engine)
    with app.store.engine.begin() as connection:  # as an Iris before the answer check indexed it
        connection.execute(sql("DELETE FROM correction_memory WHERE is_answer"))
    started = CorrectionMemory(store, embedder, MemoryConfig(), contrasts=contrasts)  # the next start
    assert started.sync() == 1
    assert [e.correction_id for e in store.memory_entries(embedder.name) if e.is_answer] == [correction]
    assert started.recall("How much does a burger cost at the Quarry Tap?", "any") is None
    served = started.recall("How much is a pint in the Quarry Tap?", "any")
    assert served is not None and served.correction_id == correction
    assert CorrectionMemory(store, embedder, MemoryConfig(), contrasts=contrasts).sync() == 0  # once


MEASURED_SETS = sorted((FIXTURES / "memory").glob("*.json"))


@pytest.mark.parametrize("path", MEASURED_SETS, ids=[p.stem for p in MEASURED_SETS])
def test_every_measured_fact_set_can_count_a_right_answer(path: Path) -> None:
    """bench/memory.py counts a reply right when it holds every key of its fact: a key missing
    from its own answer would count even the approved text wrong, a wording listed twice twice."""
    facts = json.loads(path.read_text(encoding="utf-8"))
    assert len(facts["facts"]) >= 10 and len(facts["unrelated"]) >= 40
    probes = list(facts["unrelated"])
    for fact in facts["facts"]:
        assert fact["keys"] and all(key in fact["answer"] for key in fact["keys"]), fact["question"]
        assert len(fact["unseen"]) == 5 and len(fact["near_miss"]) >= 2, fact["question"]
        probes += [fact["question"], *fact["unseen"], *fact["near_miss"]]
    assert len(set(map(str.casefold, probes))) == len(probes)
