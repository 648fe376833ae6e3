"""The Retrain page: refusals, a run read back from its files, the model switches, the A/B stop, and a
real cpu-tiny retrain started from the page and followed until the gate's verdict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bots.app import App, build_app
from bots.cli import app as cli_app
from bots.web.server import create_app
from core.ab import start as start_ab
from core.experiments import ABConfig
from finetune.callbacks import record_loss
from finetune.profiles import get_profile
from finetune.run_watch import LAUNCH
from finetune.runs import Run
from storage.experiments import SqlExperiments
from storage.review_queue import SqlReviewQueue
from tests.conftest import make_settings
from tests.finetune import test_retrain as retrain_tests
from tests.web.conftest import TOKEN, sign_in

PAGE = "/retrain"

# The retrain tests' seeded deployment (six people teach one fact; an admin approved it) and base.
seeded = retrain_tests.seeded
base_cache = retrain_tests.base_cache


def csrf_of(client: TestClient) -> str:
    sign_in(client)
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(PAGE).text)
    assert found
    return found.group(1)


def trail(app: App) -> list[tuple[str, str, str | None]]:
    return [(e.actor, e.action.value, e.target) for e in app.store.audit_entries()]


def work_dir(app: App) -> Path:
    return app.settings.data_dir / "retrain"


# --- refusals -----------------------------------------------------------------------------------


def test_without_a_session_or_csrf_nothing_is_shown_or_started(web: TestClient, iris: App) -> None:
    assert web.get(PAGE).status_code == 303 and web.get(PAGE).headers["location"] == "/signin"
    assert web.get("/retrain/run").status_code == 303
    for path in ("/retrain/start", "/retrain/activate", "/retrain/rollback", "/retrain/ab-stop"):
        refused = web.post(path, data={"profile": "cpu-tiny", "name": "x", "decision": "promote"})
        assert refused.status_code == 403 and "Sign in first" in refused.text, path
    sign_in(web)
    for path in ("/retrain/start", "/retrain/activate", "/retrain/rollback", "/retrain/ab-stop"):
        forged = web.post(path, data={"profile": "cpu-tiny", "csrf": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.text, path
    assert not (work_dir(iris) / LAUNCH).exists()  # nothing was started
    assert [entry for entry in trail(iris) if entry[0].startswith("web:")] == []


def test_bad_starts_get_a_sentence_and_start_nothing(web: TestClient, iris: App) -> None:
    csrf = csrf_of(web)
    cases = [
        ({"profile": "../../etc"}, "Unknown profile"),
        ({"profile": "cpu-tiny", "ab": "lots"}, "between 0 and 1"),
        ({"profile": "cpu-tiny", "ab": "1.5"}, "between 0 and 1"),
        ({}, "Choose a profile"),
    ]
    for data, says in cases:
        response = web.post("/retrain/start", data={**data, "csrf": csrf})
        assert response.status_code in (400, 409) and says in response.text, (data, response.text[:300])
        assert "Traceback" not in response.text
    assert not (work_dir(iris) / LAUNCH).exists()


# --- a run read back from its files (no training: the files as the pipeline writes them) ---------


def fake_run(app: App, status: str = "running", pid: int | None = None) -> Run:
    run = Run.create(work_dir(app), get_profile("cpu-tiny"), dry_run=False)
    splits = {"train": 40, "eval_feedback": 2, "eval_finetome": 8}
    run.record("dataset", {"splits": splits, "train_sources": {}, "kto_rows": 0, "dpo_rows": 0}, 1.5)
    stage = run.dir / "train" / "sft"
    stage.mkdir(parents=True)
    for step, loss in ((1, 2.5), (2, 2.1), (2, 2.0), (3, 1.7)):  # step 2 again: a resumed stage
        record_loss(stage, step, 4, loss)
    if pid is not None:
        run.state["pid"] = pid
    run.state["status"] = status
    run.save()
    return run


def test_a_running_run_shows_its_steps_and_loss_and_is_polled(web: TestClient, iris: App) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "retrain"])
    try:
        run = fake_run(iris, pid=sleeper.pid)
        sign_in(web)
        fragment = web.get("/retrain/run").text
        assert run.name in fragment and 'hx-trigger="every 2s"' in fragment
        stages = re.search(r'<ol id="retrain-stages".*?</ol>', fragment, re.S)
        assert stages
        assert 'data-step="dataset">dataset · done · 1.5 s' in stages.group(0)
        assert 'data-step="train">train · running' in stages.group(0)
        assert 'data-step="report">report · waiting' in stages.group(0)
        assert "<polyline" in fragment and "<td>2/4</td><td>2.0000</td>" in fragment  # the last of step 2
        assert fragment.count("<td>sft</td>") == 3
        page = web.get(PAGE).text
        assert 'id="retrain-start-button" disabled' in page
        # A second start while it runs is refused with a sentence, and starts nothing.
        refused = web.post("/retrain/start", data={"profile": "cpu-tiny", "csrf": csrf_of(web)})
        assert refused.status_code == 409 and f"A retrain is already running ({run.name}" in refused.text
        assert not (work_dir(iris) / LAUNCH).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone: the page says it stopped, and how to go on; the poll reloads the page.
    fragment = web.get("/retrain/run").text
    assert "stopped" in fragment and "iris retrain --resume" in fragment and "hx-trigger" not in fragment
    assert web.get("/retrain/run?following=1").headers.get("hx-refresh") == "true"


def test_an_ended_run_shows_the_verdict_each_fact_and_the_probe(web: TestClient, iris: App) -> None:
    run = fake_run(iris)
    gate = {
        "passed": False,
        "compared_with": "smol",
        "reasons": ["held-out feedback NLL 2.1 → 2.3: worse"],
        "general_probe": {"active": {"right": 7, "total": 8}, "candidate": {"right": 5, "total": 8}},
        "facts": [
            {
                "question": "Who maintains <b>Iris</b>?",
                "answer": "Zorblat.",
                "reply": "I do not know.",
                "recalled": False,
                "known": False,
                "wordings": 3,
                "wordings_recalled": 1,
            }
        ],
        "next_steps": ["Approve more corrections."],
    }
    run.record("evaluate", gate, 3.0)
    run.record("register", {"name": run.name, "id": 2}, 0.1)
    run.finish("refused", "the gate refused it")
    sign_in(web)
    fragment = web.get("/retrain/run").text
    verdict = re.search(r'<div id="retrain-verdict".*?</div>', fragment, re.S)
    assert verdict, fragment
    text = verdict.group(0)
    assert "The gate: refused (against smol)" in text and "worse" in text
    assert "7/8 (active) → 5/8 (candidate)" in text
    assert "Who maintains &lt;b&gt;Iris&lt;/b&gt;?" in text and "<b>" not in text
    assert "<td>1/3</td>" in text and "Approve more corrections." in text
    assert "hx-trigger" not in fragment and 'id="retrain-report"' in fragment


def test_a_damaged_state_file_still_shows_the_run(web: TestClient, iris: App) -> None:
    run = fake_run(iris)
    run.record("evaluate", {"passed": True, "facts": 5, "reasons": None}, 1.0)  # edited by hand
    run.finish("promoted")
    sign_in(web)
    fragment = web.get("/retrain/run")
    assert fragment.status_code == 200 and run.name in fragment.text and "promoted" in fragment.text
    assert 'id="retrain-verdict"' not in fragment.text and "Traceback" not in fragment.text


def test_the_log_tail_shows_progress_never_a_traceback(web: TestClient, iris: App, tmp_path: Path) -> None:
    log = tmp_path / "retrain.log"
    log.write_text(
        '[1/9] dataset\nTraceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "    secret()\nValueError: the secret internals\n[1/9] dataset: 1.0 s\n"
    )
    work = work_dir(iris)
    work.mkdir(parents=True, exist_ok=True)
    (work / LAUNCH).write_text(
        json.dumps(
            {
                "pid": 999_999_999,
                "started": "2999-01-01T00:00:00+00:00",
                "profile": "cpu-tiny",
                "log": str(log),
                "out": str(tmp_path / "out.json"),
            }
        )
    )
    (tmp_path / "out.json").write_text(
        '{"status": "busy", "message": "a retrain is already running on another machine"}\n'
    )
    sign_in(web)
    fragment = web.get("/retrain/run").text
    assert "[1/9] dataset: 1.0 s" in fragment and "not-started" in fragment
    assert "Not started: a retrain is already running on another machine" in fragment
    assert "Traceback" not in fragment and "secret" not in fragment


# --- what is served: activate, roll back, stop an A/B test ---------------------------------------


def listing(app: App, served_gguf: Path) -> str:
    env = {"IRIS_DATA_DIR": str(app.settings.data_dir), "IRIS_LLM_MODEL": str(served_gguf)}
    if app.settings.database_url:
        env["DATABASE_URL"] = app.settings.database_url
    result = CliRunner().invoke(cli_app, ["models", "list"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_activate_and_roll_back_change_what_models_list_says(
    web: TestClient, iris: App, served_gguf: Path, tmp_path: Path
) -> None:
    served = iris.store.active_model()
    assert served is not None
    iris.store.register_model("candidate-1", str(served_gguf), None, {"gate": {"passed": True, "facts": []}})
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    iris.store.register_model("damaged", str(broken))
    csrf = csrf_of(web)
    assert "gate passed" in web.get(PAGE).text

    done = web.post("/retrain/activate", data={"name": "candidate-1", "csrf": csrf})
    assert done.status_code == 200 and f"Active: candidate-1 (was {served.name})" in done.text
    assert "* candidate-1" in listing(iris, served_gguf)

    refused = web.post("/retrain/activate", data={"name": "damaged", "csrf": csrf})
    assert refused.status_code == 409 and "Nothing changed: not activated: damaged" in refused.text
    assert "candidate-1 stays active" in refused.text and "Traceback" not in refused.text
    assert "* candidate-1" in listing(iris, served_gguf) and "broken:" in listing(iris, served_gguf)
    unknown = web.post("/retrain/activate", data={"name": "<nope>", "csrf": csrf})
    assert unknown.status_code == 409 and "no model version named &#39;&lt;nope&gt;&#39;" in unknown.text

    back = web.post("/retrain/rollback", data={"csrf": csrf})
    assert back.status_code == 200 and f"Active: {served.name} (was candidate-1)" in back.text
    assert f"* {served.name}" in listing(iris, served_gguf)
    entries = trail(iris)
    assert ("web:admin", "model.activate", "candidate-1") in entries, entries
    assert ("web:admin", "model.rollback", served.name) in entries, entries


def test_stopping_an_ab_test_from_the_page(web: TestClient, iris: App, served_gguf: Path) -> None:
    served = iris.store.active_model()
    assert served is not None
    iris.store.register_model("candidate-ab", str(served_gguf))
    experiments = SqlExperiments(iris.store.engine, ABConfig())
    experiment = start_ab(
        experiments, iris.store, "candidate-ab", share=0.5, min_ratings=30, margin=0.05, actor="test"
    )
    csrf = csrf_of(web)
    page = web.get(PAGE).text
    assert 'id="retrain-ab-stop"' in page and "candidate-ab" in page
    assert web.post("/retrain/ab-stop", data={"decision": "maybe", "csrf": csrf}).status_code == 400
    stopped = web.post("/retrain/ab-stop", data={"decision": "rollback", "csrf": csrf})
    assert (
        stopped.status_code == 200
        and f"A/B test {experiment.id} stopped: rollback; active: {served.name}" in stopped.text
    )
    assert experiments.running_experiment() is None
    again = web.post("/retrain/ab-stop", data={"decision": "promote", "csrf": csrf})
    assert again.status_code == 409 and "No A/B test is running." in again.text
    assert ("web:admin", "ab.stop", "candidate-ab") in trail(iris)


# --- a real cpu-tiny retrain, started from the page ------------------------------------------------


@pytest.fixture
def deployment(
    seeded: retrain_tests.Seeded,
    tmp_path: Path,
    served_gguf: Path,
    base_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[App]:
    shutil.copytree(seeded.data_dir, tmp_path / "data")
    child = {
        **retrain_tests.TINY,
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_RETRAIN_BASE_CACHE": str(base_cache),
    }
    for name, value in child.items():
        monkeypatch.setenv(name, value)  # the run is a child process: it reads the environment
    monkeypatch.delenv("DATABASE_URL", raising=False)
    application = build_app(
        make_settings(tmp_path, served_gguf, retrain_base_cache=base_cache, web_token=TOKEN)
    )
    yield application
    application.close()


def test_a_cpu_tiny_retrain_started_from_the_page_is_followed_to_its_verdict(
    deployment: App, served_gguf: Path
) -> None:
    iris = deployment
    before = iris.store.active_model()
    assert before is not None
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), iris.settings.web, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as web:
        csrf = csrf_of(web)
        started = web.post("/retrain/start", data={"profile": "cpu-tiny", "csrf": csrf})
        assert started.status_code == 303, started.text[:500]
        second = web.post("/retrain/start", data={"profile": "cpu-tiny", "csrf": csrf})
        assert second.status_code == 409 and "A retrain is already running" in second.text

        seen_steps, seen_loss, began = set(), False, time.monotonic()
        while True:
            fragment = web.get("/retrain/run").text
            assert "Traceback" not in fragment
            seen_steps |= set(re.findall(r'data-step="(\w+)">\w+ · running', fragment))
            seen_loss = seen_loss or "<polyline" in fragment
            if 'hx-trigger="every 2s"' not in fragment:
                break
            assert time.monotonic() - began < 900, fragment[-2000:]
            time.sleep(2)
        page = web.get(PAGE).text

    assert seen_steps, "no step was seen running"
    assert seen_loss and "<polyline" in page and 'id="retrain-losses"' in page
    status = re.search(r'data-status="([\w-]+)"', page)
    assert status and status.group(1) in ("promoted", "refused"), page[-3000:]
    assert page.count("· done") == 9, page  # every step ran
    assert 'id="retrain-verdict"' in page and "General-knowledge probe" in page and 'id="retrain-facts"' in page
    name = re.search(r"<strong>(cpu-tiny-[\w-]+)</strong>", page)
    assert name
    listed = listing(iris, served_gguf)
    if status.group(1) == "promoted":
        assert f"* {name.group(1)}" in listed
        rolled = web_rollback(app)
        assert f"Active: {before.name} (was {name.group(1)})" in rolled
        assert f"* {before.name}" in listing(iris, served_gguf)
    else:
        assert f"* {before.name}" in listed and name.group(1) in listed
    entries = trail(iris)
    assert ("web:admin", "retrain.start", "cpu-tiny") in entries, entries
    assert any(actor == "web:admin" and action == "retrain.outcome" for actor, action, _ in entries), entries


def web_rollback(app: object) -> str:
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as web:  # type: ignore[arg-type]
        response = web.post("/retrain/rollback", data={"csrf": csrf_of(web)})
        assert response.status_code == 200, response.text[:500]
        return response.text


def test_the_launch_record_is_not_in_the_web_process_memory(deployment: App) -> None:
    """A restart of the console (a new app on the same files) shows the same launch."""
    work = work_dir(deployment)
    work.mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "retrain"])
    try:
        (work / LAUNCH).write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "started": "2999-01-01T00:00:00+00:00",
                    "profile": "cpu-tiny",
                    "log": os.devnull,
                    "out": os.devnull,
                }
            )
        )
        app = create_app(
            deployment.service, SqlReviewQueue(deployment.store.engine), deployment.settings.web, TOKEN
        )
        with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as web:
            sign_in(web)
            fragment = web.get("/retrain/run").text
            assert "(starting)" in fragment and 'hx-trigger="every 2s"' in fragment
    finally:
        sleeper.kill()
        sleeper.wait()
