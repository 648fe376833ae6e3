"""The audit trail: every admin action, consent change and /forget, with who, when and what.

Actions through the service (as the chats and the console use it) and through
the ``iris`` command are read back with ``iris audit``, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bots.app import App
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone
from tests.fakes import HeldRetrainer

IRIS = str(Path(sys.executable).with_name("iris"))
ADA = Person("telegram", "7361029", "Ada")
ADMIN = "telegram:900"


async def reply_to(app: App, person: Person, text: str) -> int:
    chat = ChatRef(person.platform, person.user_id)
    events = [e async for e in app.service.replies.handle(IncomingMessage(chat, person, text=text))]
    return next(e.turn_id for e in events if isinstance(e, ReplyDone))


def iris(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env["IRIS_DATA_DIR"] = str(app.settings.data_dir)
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=300)


async def test_every_admin_action_is_recorded_with_who_when_and_what(app: App) -> None:
    began = datetime.now(UTC)
    reply = await reply_to(app, ADA, "What is the capital of France?")
    await app.service.privacy.set_consent(ADA, True)
    approve = await app.service.feedback.correct(ADA, reply, "Paris.")
    edit = await app.service.feedback.correct(ADA, reply, "Paris, on the Seine.")
    reject = await app.service.feedback.correct(ADA, reply, "Lyon.")
    await app.service.feedback.review(approve, True, ADMIN)
    await app.service.feedback.review(edit, True, ADMIN, "Paris is the capital of France.")
    await app.service.feedback.review(reject, False, ADMIN)
    retrainer = HeldRetrainer()
    retrainer.release.set()
    app.service.admin.retrainer = retrainer
    await app.service.admin.retrain("cpu-tiny", actor=ADMIN)
    served = app.store.active_model()
    assert served is not None
    app.store.register_model("older", served.gguf_path)  # activation loads it first: a real file

    assert iris(app, "models", "activate", "older").returncode == 0
    assert iris(app, "models", "rollback").returncode == 0
    assert iris(app, "review", "--reject", str(approve), "--reviewer", "console:grace").returncode == 0
    await app.service.privacy.forget(ADA)

    listed = iris(app, "audit", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("consent", ADA.pseudonym),
        ("review.approve", f"correction:{approve}"),
        ("memory.add", f"correction:{approve}"),  # answers at once (core.memory)
        ("review.edit", f"correction:{edit}"),
        ("memory.add", f"correction:{edit}"),
        ("review.reject", f"correction:{reject}"),  # never indexed: the memory did not change
        ("retrain.start", "cpu-tiny"),
        ("retrain.outcome", "iris-ft-1"),
        ("model.promote", "iris-ft-1"),
        ("model.activate", "older"),
        ("model.rollback", served.name),
        ("review.reject", f"correction:{approve}"),
        ("memory.drop", f"correction:{approve}"),
        ("forget", None),
    ]
    actors = [e["actor"] for e in entries]
    assert actors[1:9] == [ADMIN] * 8
    assert actors[9].startswith("console:") and actors[10].startswith("console:")
    assert actors[11] == actors[12] == "console:grace"
    # After /forget the trail keeps what Ada did, but not who she was.
    assert actors[0] == actors[13] == ADA.pseudonym and ADA.user_id not in listed.stdout
    assert entries[9]["details"] == {"was": served.name} and entries[10]["details"] == {"was": "older"}
    assert entries[0]["details"] == {"consent": True}
    assert entries[12]["details"]["entries"] > 1  # the question and its rule-made wordings left the memory
    assert entries[13]["details"]["turns"] == 2
    assert all(began <= datetime.fromisoformat(e["at"]) <= datetime.now(UTC) for e in entries)
    assert "Paris" not in listed.stdout  # the trail holds decisions, not people's words

    later = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert iris(app, "audit", "--since", later).stdout.strip() == f"Nothing in the audit trail since {later}."
    text = iris(app, "audit", "--since", began.date().isoformat()).stdout.splitlines()
    assert len(text) == len(entries) and " · review.edit · " in text[3]
