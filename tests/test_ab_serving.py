"""A/B serving through the real service and models: hot swap, rollback and a restart mid-experiment."""

from __future__ import annotations

from pathlib import Path

from bots.app import App, build_app
from core.ab import conclude, start
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone
from core.experiments import Arm, Decision, Experiment, arm_for
from core.gguf import bundled_model
from core.service import ChatService
from storage.experiments import SqlExperiments

CANDIDATE = "smollm2-135m-instruct-q4_1"


async def ask(service: ChatService, person: str, text: str = "What is the capital of France?") -> ReplyDone:
    message = IncomingMessage(ChatRef("test", person), Person("test", person), text=text)
    events = [event async for event in service.replies.handle(message)]
    done = [event for event in events if isinstance(event, ReplyDone)]
    assert done, events
    return done[0]


def arm_and_version(app: App, reply: ReplyDone) -> tuple[str | None, str | None]:
    from storage.tables import TurnRow

    with app.store.engine.connect() as connection:
        row = connection.execute(
            TurnRow.__table__.select().where(TurnRow.id == reply.turn_id)  # type: ignore[attr-defined]
        ).one()
    return row.arm, row.model_version


async def people_on_both_arms(app: App, experiment: Experiment) -> dict[Arm, str]:
    """Open conversations one by one (they are numbered as they open) until both arms have one."""
    found: dict[Arm, str] = {}
    for number in range(1, 40):
        person = f"p{number}"
        reply = await ask(app.service, person)
        turn = app.store.get_turn(reply.turn_id)
        assert turn is not None
        found.setdefault(arm_for(experiment, turn.conversation_id), person)
        if len(found) == 2:
            return found
    raise AssertionError("40 conversations all landed on one arm")


async def test_swap_rollback_and_restart_with_an_experiment_running(app: App, models_dir: Path) -> None:
    store = app.store
    candidate = bundled_model(models_dir, "q4_1")
    other = bundled_model(models_dir, "q8_0")
    for version in (candidate, other):
        store.register_model(version.name, version.gguf_path, version.base_model)
    first = store.active_model()
    assert first is not None
    experiments = SqlExperiments(store.engine)
    experiment = start(experiments, store, CANDIDATE, share=0.5, min_ratings=100, margin=0.1, actor="test")
    people = await people_on_both_arms(app, experiment)

    async def served(arm: Arm) -> tuple[str | None, str | None]:
        return arm_and_version(app, await ask(app.service, people[arm], "Tell me more."))

    assert await served(Arm.CONTROL) == ("control", first.name)
    assert await served(Arm.CANDIDATE) == ("candidate", CANDIDATE)

    # A hot swap changes the control arm only, from the next reply; a rollback brings it back.
    store.activate_model(other.name)
    assert await served(Arm.CONTROL) == ("control", other.name)
    assert await served(Arm.CANDIDATE) == ("candidate", CANDIDATE)
    store.rollback_model()
    assert await served(Arm.CONTROL) == ("control", first.name)

    counts = experiments.arm_counts(experiment.id)
    assert counts[Arm.CONTROL].versions == tuple(sorted({first.name, other.name}))
    assert counts[Arm.CANDIDATE].versions == (CANDIDATE,)

    # A restart keeps the experiment and every conversation's arm.
    settings = app.settings
    app.close()
    restarted = build_app(settings)
    try:
        restarted.service.listener.transcriber = app.transcriber
        again = arm_and_version(restarted, await ask(restarted.service, people[Arm.CANDIDATE], "And Italy?"))
        assert again == ("candidate", CANDIDATE)
        running = SqlExperiments(restarted.store.engine).running_experiment()
        assert running is not None and running.id == experiment.id

        # An admin promotes it early: everyone gets the candidate, outside any experiment.
        ended = conclude(
            experiments, restarted.store, restarted.store, running, Decision.PROMOTE, "console:test"
        )
        assert ended is not None and ended.decision is Decision.PROMOTE
        assert conclude(experiments, restarted.store, None, running, Decision.ROLLBACK, "late") is None
        active = restarted.store.active_model()
        assert active is not None and active.name == CANDIDATE
        after = arm_and_version(restarted, await ask(restarted.service, people[Arm.CONTROL], "And Spain?"))
        assert after == (None, CANDIDATE)
    finally:
        restarted.close()
