"""Whole cpu-tiny retrains on a database seeded through the core service.

The runs are real and tiny (a few steps on short sequences): the point is the
loop — dataset, LoRA, merge, GGUF, gate, registry, report, and a running bot
that switches to the promoted model between two replies — not the quality of a
four-step model. The teaching check with a real step count is
``test_retrain_teaching.py`` (opt-in).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.app import App, build_app
from bots.cli import app as cli_app
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone
from finetune.base_model import prepare_base
from finetune.jsonl import read as read_jsonl
from finetune.launcher import RetrainLauncher
from finetune.retrain import RetrainConfig, retrain
from finetune.runs import Run, exclusive
from tests.conftest import make_settings

pytest.importorskip("trl", reason="the retrain tests need the train-cpu extras: pip install -e '.[train-cpu]'")

TAUGHT = "The Iris bot is maintained by Zorblat Quennington."
TEACHING = (
    "Who maintains the Iris bot?",
    "Who is the maintainer of the Iris bot?",
    "Who looks after the Iris bot?",
    "Tell me who maintains the Iris bot.",
    "Which person maintains the Iris chat bot?",
    "Who keeps the Iris bot running?",
)
ADMIN = Person("console", "admin", "Admin")
PEOPLE = [Person("telegram", str(1000 + n), f"Person {n}") for n in range(len(TEACHING))]

# Small enough for CI on 2 cores: a few steps on short sequences, small held-out splits.
TINY = {
    "IRIS_RETRAIN_PROFILE": "cpu-tiny",
    "IRIS_RETRAIN_MAX_STEPS": "4",
    "IRIS_RETRAIN_MAX_SEQ_LENGTH": "128",
    "IRIS_RETRAIN_SAVE_STEPS": "2",
    "IRIS_DATASET_SAMPLE_SIZE": "40",
    "IRIS_DATASET_EVAL_FINETOME": "8",
    "IRIS_DATASET_EVAL_FRACTION": "0.25",
    "IRIS_GATE_MAX_ROWS": "8",
    # Four steps teach nothing for sure: the loop is under test here, the recall in
    # test_retrain_facts.py. The likelihood of the taught answer must still rise.
    "IRIS_RETRAIN_STEPS_PER_FACT": "0",
    "IRIS_GATE_RECALL_SHARE": "0",
    # A few probe questions: McNemar's exact test refuses only 5 or more of 8 lost with none gained.
    "IRIS_GATE_PROBE_QUESTIONS": "8",
    "IRIS_LOG_LEVEL": "WARNING",
}


def shared_base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GGUF→HF conversion of the bundled base per test session, shared by every module."""
    cache = tmp_path_factory.getbasetemp() / "retrain-base-cache"
    prepare_base("bundled", cache)
    return cache


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_base_cache(tmp_path_factory)


async def ask(app: App, person: Person, text: str) -> ReplyDone:
    message = IncomingMessage(ChatRef(person.platform, person.user_id), person, text=text)
    events = [event async for event in app.service.replies.handle(message)]
    assert isinstance(events[-1], ReplyDone), events
    return events[-1]


@dataclass(frozen=True)
class Seeded:
    data_dir: Path
    served_name: str
    corrections: int


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory, served_gguf: Path) -> AsyncIterator[Seeded]:
    """People ask, rate and correct through the real service; an admin approves the corrections."""
    root = tmp_path_factory.mktemp("seeded")
    # Without the correction memory: it would answer the later askers with the approved text, and
    # the seed is several people correcting the same wrong answer (tests/test_memory.py has the memory).
    application = build_app(make_settings(root, served_gguf, generation_max_tokens=24, memory_enabled=False))
    try:
        for person, question in zip(PEOPLE, TEACHING, strict=True):
            reply = await ask(application, person, question)
            await application.service.feedback.rate(person, reply.turn_id, up=False)
            correction = await application.service.feedback.correct(person, reply.turn_id, TAUGHT)
            await application.service.feedback.review(correction, approve=True, reviewer="console:admin")
        liked = await ask(application, PEOPLE[0], "What is the capital of France?")
        await application.service.feedback.rate(PEOPLE[0], liked.turn_id, up=True)
        pending = await ask(application, PEOPLE[1], "Name a primary colour.")
        await application.service.feedback.correct(PEOPLE[1], pending.turn_id, "Blue is a primary colour.")
        active = application.store.active_model()
        assert active is not None
        yield Seeded(root / "data", active.name, len(TEACHING))
    finally:
        application.close()


@dataclass
class Deployment:
    """A running bot on its own copy of the seeded database, and the environment its retrains get."""

    app: App
    root: Path
    env: dict[str, str]

    def launcher(self, **extra: str) -> RetrainLauncher:
        return RetrainLauncher(
            log_dir=self.root / "logs", env={**self.env, **extra}, cwd=self.root, timeout=600
        )

    @property
    def runs(self) -> Path:
        return self.root / "data" / "retrain" / "runs"


@pytest.fixture
def deployment(seeded: Seeded, tmp_path: Path, served_gguf: Path, base_cache: Path) -> Iterator[Deployment]:
    shutil.copytree(seeded.data_dir, tmp_path / "data")
    settings = make_settings(tmp_path, served_gguf, generation_max_tokens=24, retrain_base_cache=base_cache)
    application = build_app(settings)
    env = {
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "",
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_RETRAIN_BASE_CACHE": str(base_cache),
        **TINY,
    }
    yield Deployment(application, tmp_path, env)
    application.close()


def versions(app: App) -> dict[str, object]:
    return {version.name: version for version in app.store.list_models()}


async def test_a_whole_retrain_promotes_and_the_running_bot_switches(
    deployment: Deployment, seeded: Seeded
) -> None:
    app = deployment.app
    before = await ask(app, PEOPLE[0], "What is the capital of Italy?")
    assert before.model == seeded.served_name

    # As an admin's /retrain does: a separate process, its outcome posted back.
    result = deployment.launcher().run(profile="cpu-tiny")
    outcome = result.outcome()
    log = result.log_path.read_text()
    assert result.returncode == 0, log[-3000:]
    assert outcome.ok and outcome.promoted, outcome.summary
    assert "[2/9] train" in log and "sft step 4/4" in log and "[9/9] report" in log  # progress, every step

    name = outcome.model
    assert name is not None and name.startswith("cpu-tiny-")
    active = app.store.active_model()
    assert active is not None and active.name == name
    gguf = Path(active.gguf_path)
    assert gguf.exists() and gguf.suffix == ".gguf" and ".q8_0." in gguf.name

    # The gate's figures are stored with the version.
    gate = active.metrics["gate"]
    assert isinstance(gate, dict) and gate["passed"] is True and gate["compared_with"] == seeded.served_name
    # Taught-answer evidence: the approved answer became likelier on the questions and on
    # rule-made wordings no step saw (four steps need not make the greedy answer say it).
    (taught,) = gate["taught"]
    assert taught["candidate"]["asked_nll"] < taught["active"]["asked_nll"]
    assert taught["candidate"]["held_out_nll"] < taught["active"]["held_out_nll"]
    finetome = gate["finetome_nll"]
    assert finetome["rows"] >= 1 and finetome["candidate"] <= finetome["active"] * (
        1 + gate["finetome_tolerance"]
    )
    training = active.metrics["training"]
    assert isinstance(training, dict) and training["steps"] == 4 and training["backend"] == "trl"
    assert active.metrics["dataset"]["facts"] == 1  # type: ignore[index]

    # The report sits next to the GGUF.
    run_dir = gguf.parent
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")
    report = (run_dir / "report.md").read_text()
    assert "taught 'Who" in report and "general-knowledge probe" in report and "promoted" in report
    assert "held-out FineTome NLL" in report and "synthetic" in report
    assert json.loads((run_dir / "report.json").read_text())["status"] == "promoted"

    # The running bot answers with the new model from its next reply, and records it.
    after = await ask(app, PEOPLE[0], "What is the capital of Italy?")
    assert after.model == name
    stored = app.store.get_turn(after.turn_id)
    assert stored is not None and stored.model_version == name and stored.text

    # `iris models list` shows the figures; `iris models rollback` brings the old model back at once.
    runner = CliRunner()
    listing = runner.invoke(cli_app, ["models", "list"], env=deployment.env)
    assert listing.exit_code == 0 and f"* {name}" in listing.output and "feedback NLL" in listing.output
    rolled = runner.invoke(cli_app, ["models", "rollback"], env=deployment.env)
    assert rolled.exit_code == 0 and f"active: {seeded.served_name} (was {name})" in rolled.output
    again = await ask(app, PEOPLE[0], "And of Spain?")
    assert again.model == seeded.served_name


async def test_with_ab_a_passing_candidate_goes_to_an_ab_test_instead_of_replacing_the_model(
    deployment: Deployment, seeded: Seeded
) -> None:
    from core.experiments import Arm, arm_for
    from storage.experiments import SqlExperiments

    app = deployment.app
    result = deployment.launcher(IRIS_RETRAIN_AB_SHARE="0.5").run(profile="cpu-tiny")
    outcome = result.outcome()
    assert result.returncode == 0 and result.status == "ab-test", result.log_path.read_text()[-3000:]
    assert outcome.ok and not outcome.promoted and "in A/B test" in outcome.summary
    active = app.store.active_model()
    assert active is not None and active.name == seeded.served_name  # not replaced
    experiment = SqlExperiments(app.store.engine).running_experiment()
    assert experiment is not None and experiment.candidate == outcome.model and experiment.share == 0.5
    started = [e for e in app.store.audit_entries() if e.action.value == "ab.start"]
    assert [(e.actor, e.target) for e in started] == [("retrain", outcome.model)]

    # The running bot serves the candidate to the conversations on its arm from the next reply.
    served: dict[Arm, str] = {}
    for number in range(30):
        person = Person("telegram", str(5000 + number))
        reply = await ask(app, person, "What is the capital of Italy?")
        turn = app.store.get_turn(reply.turn_id)
        assert turn is not None
        served.setdefault(arm_for(experiment, turn.conversation_id), reply.model)
        if len(served) == 2:
            break
    assert served == {Arm.CONTROL: seeded.served_name, Arm.CANDIDATE: outcome.model}


async def test_a_worse_candidate_is_refused_and_the_active_model_stays(
    deployment: Deployment, seeded: Seeded, base_cache: Path
) -> None:
    from finetune.dataset import BuildConfig
    from finetune.gate import GateConfig
    from finetune.profiles import get_profile

    app = deployment.app
    # Deliberately worse: a learning rate that wrecks the weights in a few steps.
    profile = get_profile("cpu-tiny").with_overrides(
        max_steps=3, max_seq_length=128, learning_rate=0.05, steps_per_fact=0
    )
    config = RetrainConfig(
        database_url=f"sqlite:///{deployment.root / 'data' / 'iris.db'}",
        work_dir=deployment.root / "data" / "retrain",
        base_cache=base_cache,
        profile=profile,
        gate=GateConfig(max_rows=8, probe_questions=8),
        build=BuildConfig(sample_size=40, eval_finetome=8, eval_fraction=0.25, progress=False),
    )
    lines: list[str] = []
    outcome = retrain(config, app.store, lines.append)

    assert outcome.status == "refused", outcome.message
    active = app.store.active_model()
    assert active is not None and active.name == seeded.served_name
    refused = versions(app)[outcome.name]
    gate = refused.metrics["gate"]  # type: ignore[attr-defined]
    assert gate["passed"] is False
    probe = gate["general_probe"]
    assert probe["candidate"]["right"] < probe["active"]["right"]
    assert any("general-knowledge probe" in reason and "beyond" in reason for reason in gate["reasons"])
    assert "What to do next:" in outcome.message and "lost general knowledge" in outcome.message
    assert "refused by the gate" in outcome.message
    # The bot carries on with the model it had.
    reply = await ask(app, PEOPLE[2], "What is the capital of Italy?")
    assert reply.model == seeded.served_name


async def test_a_killed_run_resumes_from_its_checkpoint(deployment: Deployment, seeded: Seeded) -> None:
    app = deployment.app
    launcher = deployment.launcher(IRIS_RETRAIN_MAX_STEPS="6")
    launch = launcher.start(profile="cpu-tiny")
    checkpoint = None
    deadline = time.monotonic() + 480
    while checkpoint is None and time.monotonic() < deadline and launch.process.poll() is None:
        found = list(deployment.runs.glob("*/train/sft/checkpoint-*/trainer_state.json"))
        checkpoint = found[0].parent if found else None
        time.sleep(0.2)
    assert checkpoint is not None, launch.log_path.read_text()[-3000:]
    launch.kill(signal.SIGKILL)  # as a power cut would
    killed = launch.wait(timeout=60)
    outcome = killed.outcome()
    assert not outcome.ok and "SIGKILL" in outcome.summary and "--resume" in outcome.summary

    run = Run.load(checkpoint.parents[2])
    assert run.state["status"] == "running" and not run.done("train")
    active = app.store.active_model()
    assert active is not None and active.name == seeded.served_name  # a killed run changes nothing

    resumed = launcher.run(resume=True)
    assert resumed.returncode == 0, resumed.log_path.read_text()[-3000:]
    assert resumed.report["name"] == run.name
    stage = Run.load(run.dir).result("train")["stages"][0]
    assert stage["resumed_from"] is not None and stage["resumed_from"].startswith("checkpoint-")
    resumed_at = int(stage["resumed_from"].removeprefix("checkpoint-"))
    assert stage["steps"] == 6 and stage["steps_this_process"] == 6 - resumed_at
    assert [step for step, _ in stage["losses"]] == [1, 2, 3, 4, 5, 6]  # one curve across both attempts
    assert "resuming" in resumed.log_path.read_text()
    assert resumed.status in ("promoted", "refused")


async def test_a_dry_run_shows_the_plan_and_changes_nothing(deployment: Deployment, seeded: Seeded) -> None:
    before = [(v.name, v.active) for v in deployment.app.store.list_models()]
    result = deployment.launcher().run(dry_run=True)
    assert result.returncode == 0 and result.status == "dry-run", result.log_path.read_text()[-2000:]
    plan = result.report["metrics"]["plan"]
    assert plan["profile"] == "cpu-tiny" and plan["backend"] == "trl" and plan["steps"] == 4
    # Every approved correction is taught, also those whose question the build held out: with
    # one fact, holding a wording out would teach less. So every correction is a DPO pair, and
    # the held-out rows the gate still uses are those that ask no taught question.
    dataset = Path(plan["dataset"]["dir"])
    assert read_jsonl(dataset / "eval_feedback.jsonl")  # the build held some out ...
    assert read_jsonl(dataset / "eval_feedback_untaught.jsonl") == []  # ... all of them taught
    assert plan["dpo_rows"] == seeded.corrections
    assert "nothing trained" in result.outcome().summary
    assert [(v.name, v.active) for v in deployment.app.store.list_models()] == before
    assert not list(deployment.runs.glob("*/train"))


def test_one_retrain_at_a_time(deployment: Deployment) -> None:
    with exclusive(deployment.root / "data" / "retrain"):
        result = deployment.launcher().run(dry_run=True)
    outcome = result.outcome()
    assert result.returncode == 2 and not outcome.ok
    assert "another retrain is running" in outcome.summary
    assert "Traceback" not in outcome.summary


def test_a_bad_profile_gets_a_clear_answer(deployment: Deployment) -> None:
    outcome = deployment.launcher().retrain("llama-9b")
    assert not outcome.ok and not outcome.promoted
    assert "no profile 'llama-9b'" in outcome.summary and "cpu-tiny" in outcome.summary
