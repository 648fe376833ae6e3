"""A/B tests of two personas on the active model (issue #29), and replies the correction memory served
kept out of every A/B figure: stored and counted on SQLite and PostgreSQL, served through the service
with the recording generator (the prompt that reached the model is what is asserted), and started,
read and stopped through the real ``iris models ab`` command (tests/test_persona_ab_cli.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
from sqlalchemy import select

from bots.render import format_ab
from core.ab import ABServing, PinnedGenerator, conclude, experiment_report, start
from core.choices import AgainRefused
from core.config import ChatConfig, ServiceConfig
from core.domain import (
    AuditAction,
    ChatMessage,
    ChatRef,
    IncomingMessage,
    ModelVersion,
    Person,
    ReplyDone,
    Timings,
)
from core.embedding import Embedder
from core.experiments import ABConfig, Arm, Decision, Experiment, ExperimentKind, arm_for
from core.memory import CorrectionMemory
from core.personas import Persona, PersonaBook
from core.ports import Generation
from core.service import ChatService
from core.transcription import WhisperTranscriber
from storage.choices import SqlAnswerChoices
from storage.database import make_engine
from storage.experiments import ExperimentRefused, SqlExperiments
from storage.personas import SqlPersonas
from storage.repository import SqlStore
from storage.tables import PersonaRow, TurnRow
from tests.fakes import RecordingGenerator

ANN, BOB, CAROL = (
    Person("telegram", "1", "Ann"),
    Person("telegram", "2", "Bob"),
    Person("telegram", "3", "Carol"),
)
ADMIN = "telegram:99"
CONFIGURED = "You are Iris, a helpful assistant."
PIRATE = "You are a cheerful pirate. Answer in one sentence."
TEACHER = "You are a patient teacher. Explain step by step."
SAILOR = "You are an old sailor."
QUESTION = "Who designed the Iris logo?"
ANSWER = "The Iris logo was designed by Odalys Fenwright in 2021."
SERVED = "served"


class OptionsRecorder(RecordingGenerator):
    """Keeps each reply's sampling options too: a persona's temperature must reach the model."""

    def __init__(self) -> None:
        super().__init__("Ahoy there, friend.")
        self.options: list[Generation] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.options.append(options)
        async for piece in super().stream(messages, options):
            yield piece


def no_candidate(version: ModelVersion) -> PinnedGenerator:
    raise AssertionError(f"a persona experiment loads no second model ({version.name})")


def service_on(
    store: SqlStore,
    generator: RecordingGenerator,
    rules: ABConfig | None = None,
    memory: CorrectionMemory | None = None,
) -> ChatService:
    """A service as ``bots.app`` builds it (A/B serving, personas read at each reply), text only."""
    config = ServiceConfig(chat=ChatConfig(system_prompt=CONFIGURED), generation=Generation(temperature=0.0))
    return ChatService(
        store,
        WhisperTranscriber(),
        generator,
        config,
        audit=store,
        ab=ABServing(SqlExperiments(store.engine, rules), store, no_candidate),
        memory=memory,
        choices=SqlAnswerChoices(store.engine),
        personas=PersonaBook(SqlPersonas(store.engine), CONFIGURED, audit=store),
    )


async def say(service: ChatService, chat: ChatRef, text: str, sender: Person = ANN) -> ReplyDone:
    message = IncomingMessage(chat, sender, text=text, message_id=f"{chat.chat_id}:{text}")
    events = [event async for event in service.replies.handle(message)]
    done = [event for event in events if isinstance(event, ReplyDone)]
    assert len(done) == 1, events
    return done[0]


def system_prompt(messages: list[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


def recorded(store: SqlStore, reply_id: int) -> tuple[int | None, str | None, str | None, int | None]:
    """What the reply stored: its experiment, arm, persona and prompt version."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(TurnRow.experiment_id, TurnRow.arm, TurnRow.persona, TurnRow.persona_version).where(
                TurnRow.id == reply_id
            )
        ).one()
    return row.experiment_id, row.arm, row.persona, row.persona_version


def defaults(store: SqlStore) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.scalars(select(PersonaRow.name).where(PersonaRow.is_default.is_(True))))


def two_personas(store: SqlStore) -> SqlPersonas:
    personas = SqlPersonas(store.engine)
    personas.add_persona(Persona("teacher", TEACHER, is_default=True), "console:ann")
    personas.add_persona(Persona("pirate", PIRATE, temperature=0.9), "console:ann")
    return personas


# --- storage: one experiment at a time, of either kind; the winner becomes the default ---------


def test_a_persona_experiment_is_refused_while_any_runs_and_its_winner_becomes_the_default(
    store: SqlStore,
) -> None:
    personas = two_personas(store)
    store.register_model("active", "/a.gguf", activate=True)
    store.register_model("new", "/b.gguf")
    experiments = SqlExperiments(store.engine)
    with pytest.raises(ExperimentRefused, match="no persona named 'ghost'"):
        experiments.start_persona_experiment("teacher", "ghost", 0.5, 10, 0.1, "test")
    with pytest.raises(ExperimentRefused, match="two different personas"):
        experiments.start_persona_experiment("pirate", "pirate", 0.5, 10, 0.1, "test")
    with pytest.raises(ExperimentRefused, match="between 0 and 1"):
        experiments.start_persona_experiment("teacher", "pirate", 1.0, 10, 0.1, "test")

    started = experiments.start_persona_experiment("teacher", "pirate", 0.5, 10, 0.1, "console:ann")
    assert (started.kind, started.control, started.candidate) == (ExperimentKind.PERSONA, "teacher", "pirate")
    assert experiments.running_experiment() == started  # read back from the database as started
    for refused in (
        lambda: experiments.start_experiment("new", 0.2, 10, 0.1, "test"),
        lambda: experiments.start_persona_experiment("pirate", "teacher", 0.5, 10, 0.1, "test"),
    ):
        with pytest.raises(ExperimentRefused, match=rf"experiment {started.id} \(personas pirate\) is running"):
            refused()

    ended = experiments.end_experiment(started.id, Decision.PROMOTE, "console:bob", {"decision": "promote"})
    assert ended is not None and ended.report["default_persona"] == "pirate"
    assert defaults(store) == ["pirate"]
    assert experiments.end_experiment(started.id, Decision.ROLLBACK, "late", {}) is None  # decided once
    assert defaults(store) == ["pirate"]
    assert store.active_model() is not None and store.active_model().name == "active"  # type: ignore[union-attr]

    # A model experiment runs after it (and refuses a persona one meanwhile) ...
    model = experiments.start_experiment("new", 0.2, 10, 0.1, "test")
    assert model.kind is ExperimentKind.MODEL
    with pytest.raises(ExperimentRefused, match=rf"experiment {model.id} \(new\) is running"):
        experiments.start_persona_experiment("teacher", "pirate", 0.5, 10, 0.1, "test")
    experiments.end_experiment(model.id, Decision.ROLLBACK, "test", {})
    assert defaults(store) == ["pirate"]  # a model experiment's ending leaves the personas alone

    # ... a rollback makes the control the default; a winner removed meanwhile changes nothing.
    back = experiments.start_persona_experiment("teacher", "pirate", 0.5, 10, 0.1, "test")
    experiments.end_experiment(back.id, Decision.ROLLBACK, "test", {})
    assert defaults(store) == ["teacher"]
    personas.add_persona(Persona("sailor", SAILOR), "console:ann")
    gone = experiments.start_persona_experiment("teacher", "sailor", 0.5, 10, 0.1, "test")
    personas.remove_persona("sailor", "console:ann")
    ended = experiments.end_experiment(gone.id, Decision.PROMOTE, "test", {})
    assert ended is not None and ended.report["default_persona"] is None
    assert defaults(store) == ["teacher"]


def test_two_endings_and_a_default_change_at_once_leave_one_ending_and_one_default(store: SqlStore) -> None:
    personas = two_personas(store)
    personas.add_persona(Persona("sailor", SAILOR), "console:ann")
    experiments = SqlExperiments(store.engine)
    experiment = experiments.start_persona_experiment("teacher", "pirate", 0.5, 10, 0.1, "test")
    barrier = Barrier(3)

    def at_once(act: Callable[[], object]) -> str:
        barrier.wait()
        return "ended" if act() is not None else "late"

    acts: list[Callable[[], object]] = [
        lambda: experiments.end_experiment(experiment.id, Decision.PROMOTE, "ab-rule", {}),  # one process
        lambda: experiments.end_experiment(experiment.id, Decision.ROLLBACK, "console:bob", {}),  # another
        lambda: personas.edit_persona("sailor", "console:ann", default=True),  # an admin, meanwhile
    ]
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(at_once, acts))
    assert sorted(outcomes[:2]) == ["ended", "late"]
    assert len(defaults(store)) == 1
    latest = experiments.latest_experiment()
    assert latest is not None and not latest.running
    winner = "pirate" if latest.decision is Decision.PROMOTE else "teacher"
    assert latest.report["default_persona"] == winner
    assert defaults(store)[0] in {winner, "sailor"}  # whichever of the two committed last


# --- storage: replies the memory served are in no arm's figures ------------------------------


def reply_in(
    store: SqlStore,
    chat: str,
    experiment: tuple[int, Arm],
    memory: str | None = None,
    persona: tuple[str, int] | None = None,
) -> int:
    receipt = store.record_user_turn(
        ChatRef("test", chat), ANN, text="hi", from_voice=False, message_id=None, shared_history=False
    )
    return store.record_reply(
        receipt.conversation_id,
        receipt.turn_id,
        "hello",
        "active",
        Timings(),
        experiment,
        (7, memory) if memory else None,
        persona,
    )


@pytest.mark.parametrize("kind", [ExperimentKind.MODEL, ExperimentKind.PERSONA])
def test_replies_the_memory_served_count_on_no_arm(store: SqlStore, kind: ExperimentKind) -> None:
    two_personas(store)
    store.register_model("active", "/a.gguf", activate=True)
    store.register_model("new", "/b.gguf")
    # One rating a person an arm is counted: a served reply rated first must not use up Ann's.
    experiments = SqlExperiments(store.engine, ABConfig(ratings_per_person=1, min_raters=1))
    if kind is ExperimentKind.PERSONA:
        experiment = experiments.start_persona_experiment("teacher", "pirate", 0.5, 2, 0.1, "test")
    else:
        experiment = experiments.start_experiment("new", 0.5, 2, 0.1, "test")
    control, candidate = (experiment.id, Arm.CONTROL), (experiment.id, Arm.CANDIDATE)
    teacher, pirate = ("teacher", 1), ("pirate", 1)

    served_control = reply_in(store, "c-memory", control, SERVED, teacher)
    store.rate(ANN, served_control, -1)
    store.rate(BOB, served_control, -1)
    up, down = reply_in(store, "c1", control, persona=teacher), reply_in(store, "c2", control, persona=teacher)
    store.rate(ANN, up, 1)
    store.rate(BOB, down, -1)
    written = reply_in(store, "k1", candidate, persona=pirate)
    grounded = reply_in(store, "k2", candidate, "grounded", pirate)  # the arm wrote it, with the correction
    served_candidate = reply_in(store, "k3", candidate, SERVED, pirate)
    store.rate(ANN, written, 1)
    store.rate(BOB, grounded, 1)
    store.rate(CAROL, served_candidate, -1)

    counts = experiments.arm_counts(experiment.id)
    assert (counts[Arm.CONTROL].conversations, counts[Arm.CONTROL].replies) == (2, 2)
    assert (counts[Arm.CONTROL].rated_replies, counts[Arm.CONTROL].all_ratings) == (2, 2)
    assert (counts[Arm.CANDIDATE].conversations, counts[Arm.CANDIDATE].replies) == (2, 2)
    assert (counts[Arm.CANDIDATE].rated_replies, counts[Arm.CANDIDATE].all_ratings) == (2, 2)
    assert counts[Arm.CONTROL].memory_served == counts[Arm.CANDIDATE].memory_served == 1
    ratings = experiments.arm_ratings(experiment.id)
    assert sorted((r.arm.value, r.up) for r in ratings) == [
        ("candidate", True),
        ("candidate", True),
        ("control", False),
        ("control", True),
    ]

    figures = experiment_report(experiments, experiment)
    assert (figures.control.ratings, figures.control.ups, figures.control.raters) == (2, 1, 2)
    assert (figures.candidate.ratings, figures.candidate.ups, figures.candidate.raters) == (2, 2, 2)
    assert figures.comparison is not None and figures.comparison.difference == pytest.approx(0.5)
    assert figures.reached  # 2 counted ratings an arm: the served replies' 3 are not among them
    arms = figures.to_json()["arms"]
    assert isinstance(arms, dict) and arms["control"]["memory_served"] == 1
    if kind is ExperimentKind.PERSONA:
        assert (arms["control"]["name"], arms["candidate"]["name"]) == ("teacher", "pirate")
        assert (counts[Arm.CONTROL].versions, counts[Arm.CANDIDATE].versions) == (
            ("teacher v1",),
            ("pirate v1",),
        )
    else:
        assert (arms["control"]["name"], arms["candidate"]["name"]) == ("active", "new")
    text = format_ab(figures)
    assert "2 replies (and 1 served from memory, not counted)" in text


def test_the_report_names_the_personas_with_known_ratings(store: SqlStore) -> None:
    two_personas(store)
    experiments = SqlExperiments(store.engine, ABConfig(ratings_per_person=5, min_raters=1))
    experiment = experiments.start_persona_experiment("teacher", "pirate", 0.5, 4, 0.1, "test")
    raters = [ANN, BOB, CAROL, Person("telegram", "4", "Dan")]
    for arm, persona, ups in ((Arm.CONTROL, ("teacher", 1), 1), (Arm.CANDIDATE, ("pirate", 1), 3)):
        for n, rater in enumerate(raters):
            reply = reply_in(store, f"{arm.value}-{n}", (experiment.id, arm), persona=persona)
            store.rate(rater, reply, 1 if n < ups else -1)
    reply_in(store, "control-unrated", (experiment.id, Arm.CONTROL), persona=("teacher", 1))

    figures = experiment_report(experiments, experiment)
    assert (figures.control.up_share, figures.candidate.up_share) == (0.25, 0.75)
    assert figures.control.rated_share == pytest.approx(4 / 5) and figures.candidate.rated_share == 1.0
    assert (
        figures.control.interval is not None
        and figures.control.interval.low < 0.25 < figures.control.interval.high
    )
    assert figures.comparison is not None and figures.comparison.difference == pytest.approx(0.5)
    assert figures.comparison.bootstrap is not None  # 4 rated conversations an arm
    assert figures.reached and figures.decision in (Decision.PROMOTE, Decision.ROLLBACK)
    stated = figures.to_json()
    assert stated["experiment"]["kind"] == "persona"  # type: ignore[index]
    text = format_ab(figures)
    assert (
        text.splitlines()[0]
        == f"A/B test {experiment.id}: persona pirate to 50% of conversations against persona teacher (running)"
    )
    assert "• control teacher [teacher v1]: 5 conversations, 5 replies, 80% rated; 4/4 ratings" in text
    assert "• candidate pirate [pirate v1]: 4 conversations, 4 replies, 100% rated; 4/4 ratings" in text
    assert "becomes the default persona" in text


# --- serving: each arm's conversations get that arm's persona, from the database -------------


async def conversations_on_both_arms(
    service: ChatService, store: SqlStore, experiment: Experiment, generator: OptionsRecorder
) -> dict[Arm, ChatRef]:
    """Open chats one by one until both arms have one; each reply is checked against its arm."""
    found: dict[Arm, ChatRef] = {}
    for number in range(1, 40):
        chat = ChatRef("telegram", f"-{number}")
        reply = await say(service, chat, "hello")
        turn = store.get_turn(reply.turn_id)
        assert turn is not None
        arm = arm_for(experiment, turn.conversation_id)
        persona, prompt, temperature = {
            Arm.CONTROL: ("teacher", TEACHER, 0.0),
            Arm.CANDIDATE: ("pirate", PIRATE, 0.9),
        }[arm]
        assert system_prompt(generator.prompts[-1]) == prompt
        assert generator.options[-1].temperature == temperature
        assert reply.persona == persona
        assert recorded(store, reply.turn_id) == (experiment.id, arm.value, persona, 1)
        found.setdefault(arm, chat)
        if len(found) == 2:
            return found
    raise AssertionError("40 conversations all landed on one arm")


async def test_each_arm_answers_with_its_persona_a_chosen_chat_stays_out_and_a_restart_keeps_both(
    store: SqlStore, database_url: str
) -> None:
    personas = two_personas(store)
    personas.add_persona(Persona("sailor", SAILOR), "console:ann")
    own = ChatRef("telegram", "-500")
    personas.set_chat_persona(own, "sailor", "telegram:99")  # an admin chose this chat's persona
    experiments = SqlExperiments(store.engine)
    experiment = start(
        experiments,
        store,
        "pirate",
        share=0.5,
        min_ratings=100,
        margin=0.1,
        actor="test",
        control_persona="teacher",
    )
    generator = OptionsRecorder()
    service = service_on(store, generator)
    chats = await conversations_on_both_arms(service, store, experiment, generator)

    kept = await say(service, own, "hello from my own chat")
    assert system_prompt(generator.prompts[-1]) == SAILOR
    assert recorded(store, kept.turn_id) == (None, None, "sailor", 1)  # out of the test: in no figure

    # A second answer (🔁) in a candidate chat is written with the arm's persona too.
    first = await say(service, chats[Arm.CANDIDATE], "tell me a joke")
    task = await service.again.ask(ANN, first.turn_id)
    with pytest.raises(AgainRefused):  # the fake says the same words twice: no pair is kept
        await task
    assert system_prompt(generator.prompts[-1]) == PIRATE
    # `iris ask --persona` pins a persona: the admin chose, so the conversation stays out.
    pinned = PersonaBook(SqlPersonas(store.engine), CONFIGURED)
    pinned.pin("teacher")
    turn = store.get_turn(first.turn_id)
    assert turn is not None and pinned.for_arm(turn.conversation_id, "pirate") is None

    # A restart: a fresh service on a fresh connection reads the experiment and the arms again.
    engine = make_engine(database_url)
    try:
        restarted_store = SqlStore(engine)
        restarted = OptionsRecorder()
        again = service_on(restarted_store, restarted)
        for arm, prompt in ((Arm.CANDIDATE, PIRATE), (Arm.CONTROL, TEACHER)):
            reply = await say(again, chats[arm], "after the restart")
            assert system_prompt(restarted.prompts[-1]) == prompt
            assert recorded(restarted_store, reply.turn_id)[:2] == (experiment.id, arm.value)
        await say(again, own, "after the restart")
        assert system_prompt(restarted.prompts[-1]) == SAILOR
    finally:
        engine.dispose()

    # An admin ends it for the pirate: the default everywhere a chat chose none, outside any test.
    ended = conclude(experiments, store, store, experiment, Decision.PROMOTE, "console:bob")
    assert ended is not None and defaults(store) == ["pirate"]
    after = await say(service, chats[Arm.CONTROL], "after the end")
    assert system_prompt(generator.prompts[-1]) == PIRATE
    assert recorded(store, after.turn_id) == (None, None, "pirate", 1)
    trail = [(e.actor, e.action, e.target, e.details.get("by")) for e in store.audit_entries()]
    assert ("console:bob", AuditAction.AB_STOP, "pirate", None) in trail
    assert ("console:bob", AuditAction.PERSONA_EDIT, "pirate", "ab") in trail
    assert all(action is not AuditAction.PROMOTE for _, action, _, _ in trail)  # no model was promoted


async def test_the_rule_ends_a_persona_test_on_the_ratings_and_makes_the_winner_the_default(
    store: SqlStore,
) -> None:
    two_personas(store)  # the teacher is the default; the pirate is the control here
    rules = ABConfig(ratings_per_person=5, min_raters=1)
    experiments = SqlExperiments(store.engine, rules)
    experiment = start(
        experiments,
        store,
        "teacher",
        share=0.5,
        min_ratings=1,
        margin=0.1,
        actor="test",
        control_persona="pirate",
    )
    generator = OptionsRecorder()
    service = service_on(store, generator, rules)
    chats: dict[Arm, ChatRef] = {}
    for number in range(1, 40):
        chat = ChatRef("telegram", f"-{number}")
        reply = await say(service, chat, "hello")
        arm = Arm(recorded(store, reply.turn_id)[1] or "")
        if arm not in chats:
            chats[arm] = chat
            await service.feedback.rate(BOB, reply.turn_id, up=True)
        if len(chats) == 2:
            break
    # One 👍 an arm: the sample is complete; one rating cannot show the teacher is not worse, so the
    # rule rolls back: the control, the pirate, becomes the default, audited as the rule's doing.
    running = experiments.running_experiment()
    assert running is None
    latest = experiments.latest_experiment()
    assert latest is not None and latest.id == experiment.id and latest.decision is Decision.ROLLBACK
    assert latest.decided_by == "ab-rule" and defaults(store) == ["pirate"]
    assert [(e.actor, e.target) for e in store.audit_entries() if e.action is AuditAction.PERSONA_EDIT] == [
        ("ab-rule", "pirate")
    ]
    reply = await say(service, chats[Arm.CANDIDATE], "after the rule")
    assert system_prompt(generator.prompts[-1]) == PIRATE and recorded(store, reply.turn_id)[:2] == (None, None)


# --- serving: a reply the memory served, in a running persona test -----------------------------


@pytest.fixture(scope="module")
def embedder(models_dir: Path) -> Embedder:
    from core.embedding import default_embedder

    return default_embedder(models_dir.parent)


async def test_a_served_reply_and_its_ratings_stay_out_of_the_arms_figures(
    store: SqlStore, embedder: Embedder
) -> None:
    from storage.memory import SqlMemoryStore

    two_personas(store)
    experiments = SqlExperiments(store.engine, ABConfig(min_raters=1))
    experiment = start(
        experiments,
        store,
        "pirate",
        share=0.5,
        min_ratings=10,
        margin=0.1,
        actor="test",
        control_persona="teacher",
    )
    generator = OptionsRecorder()
    memory = CorrectionMemory(SqlMemoryStore(store.engine), embedder)
    service = service_on(store, generator, memory=memory)
    chat = ChatRef("telegram", "-1")
    asked = await say(service, chat, QUESTION)
    _, arm, _, _ = recorded(store, asked.turn_id)
    assert arm is not None
    await service.feedback.rate(ANN, asked.turn_id, up=False)
    correction = await service.feedback.correct(ANN, asked.turn_id, ANSWER)
    await service.feedback.review(correction, approve=True, reviewer=ADMIN)

    served = await say(service, chat, QUESTION.lower())  # the same conversation, so the same arm
    assert served.text == ANSWER and served.memory == (correction, SERVED)
    assert recorded(store, served.turn_id)[:2] == (experiment.id, arm)  # its conversation's arm, noted
    await service.feedback.rate(CAROL, served.turn_id, up=True)
    await service.feedback.rate(BOB, served.turn_id, up=True)

    figures = experiment_report(experiments, experiment)
    mine = figures.control if arm == Arm.CONTROL.value else figures.candidate
    assert (mine.counts.replies, mine.counts.memory_served, mine.counts.all_ratings) == (1, 1, 1)
    assert (mine.ratings, mine.ups) == (1, 0)  # Ann's 👎 on the arm's own reply, and nothing else
