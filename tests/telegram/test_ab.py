"""An A/B test through the chat: two conversations on different arms, their ratings, the rule, /ab."""

from __future__ import annotations

from pathlib import Path

from bots.app import App
from core.ab import start
from core.experiments import ABConfig, Arm, arm_for
from core.gguf import bundled_model
from storage.experiments import SqlExperiments
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import button, turn_of, wait_for_reply, wait_for_text

CANDIDATE = "smollm2-135m-instruct-q4_1"


async def test_two_conversations_on_different_arms_are_served_stored_and_rated_apart(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, models_dir: Path
) -> None:
    store = app.store
    candidate = bundled_model(models_dir, "q4_1")  # the shipped Q4_1 file; the active model is its F16 export
    store.register_model(candidate.name, candidate.gguf_path, candidate.base_model)
    control = store.active_model()
    assert control is not None and control.name != CANDIDATE
    # One rating from one person an arm is this test's whole sample (IRIS_AB_MIN_RATERS=1).
    experiments = SqlExperiments(store.engine, ABConfig(min_raters=1))
    assert app.service.ab is not None
    app.service.ab.experiments = experiments
    experiment = start(experiments, store, CANDIDATE, share=0.5, min_ratings=1, margin=0.1, actor="test")
    await start_bot()

    # Conversations are numbered as they open: open them one by one until both arms have one.
    arms: dict[Arm, tuple[dict[str, object], int]] = {}
    for person_id in range(1, 30):
        person = user(person_id, f"Person {person_id}")
        fake_api.send_text(private_chat(person), person, "What is the capital of France?")
        reply = await wait_for_reply(fake_api, person_id)
        (conversation,) = query(app, "SELECT conversation_id FROM turns WHERE id = ?", turn_of(reply))[0]
        arms.setdefault(arm_for(experiment, conversation), (person, turn_of(reply)))
        if len(arms) == 2:
            break
    assert set(arms) == {Arm.CONTROL, Arm.CANDIDATE}

    stored = {
        Arm(arm): (version, experiment_id)
        for arm, version, experiment_id in query(
            app,
            "SELECT arm, model_version, experiment_id FROM turns WHERE id IN (?, ?)",
            arms[Arm.CONTROL][1],
            arms[Arm.CANDIDATE][1],
        )
    }
    assert stored == {Arm.CONTROL: (control.name, experiment.id), Arm.CANDIDATE: (CANDIDATE, experiment.id)}

    # Each person rates their reply: the rating lands on the arm that wrote it.
    for arm, up in ((Arm.CANDIDATE, "👎"), (Arm.CONTROL, "👍")):
        person, turn = arms[arm]
        chat = fake_api.chat(person["id"])  # type: ignore[arg-type]
        reply = next(sent for sent in chat if sent.buttons and turn_of(sent) == turn)
        fake_api.press(person, reply, button(reply, up))
        await fake_api.wait_for(lambda reply=reply: any("✓" in label for label, _ in reply.buttons))
    rated = query(app, "SELECT t.arm, r.value FROM ratings r JOIN turns t ON t.id = r.turn_id ORDER BY t.arm")
    assert rated == [("candidate", -1), ("control", 1)]

    # One rating an arm was the pre-set sample: the rule decided, and with one rating
    # an arm the candidate cannot be shown not to be worse, so the active model stays.
    ended = experiments.latest_experiment()
    assert ended is not None and not ended.running
    assert (ended.decision, ended.decided_by) == ("rollback", "ab-rule")
    assert store.active_model() == control
    assert query(app, "SELECT actor, target FROM audit_log WHERE action = 'ab.stop'") == [
        ("ab-rule", CANDIDATE)
    ]

    # The admin sees the figures in the chat; the conversation that had the candidate
    # is answered by the active model again, outside the experiment.
    admin = user(ADMIN_ID, "Grace")
    fake_api.send_text(private_chat(admin), admin, "/ab")
    shown = await wait_for_text(fake_api, ADMIN_ID, f"A/B test {experiment.id}")
    assert "ended: rollback" in shown.text and "1/1 ratings from 1/1 people" in shown.text
    person, _ = arms[Arm.CANDIDATE]
    fake_api.send_text(private_chat(person), person, "And of Italy?")
    again = await wait_for_reply(fake_api, person["id"], 2)  # type: ignore[arg-type]
    assert query(app, "SELECT model_version, arm FROM turns WHERE id = ?", turn_of(again)) == [
        (control.name, None)
    ]


async def test_ab_is_for_admins(start_bot: StartBot, fake_api: FakeBotApi) -> None:
    await start_bot()
    ada = user(1, "Ada")
    fake_api.send_text(private_chat(ada), ada, "/ab")
    await wait_for_text(fake_api, 1, "That command is for admins.")
    admin = user(ADMIN_ID, "Grace")
    fake_api.send_text(private_chat(admin), admin, "/ab")
    await wait_for_text(fake_api, ADMIN_ID, "No A/B test has run yet")
