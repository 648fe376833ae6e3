"""The newest retrain read from its files, for a page that follows it (``core.retrain_watch.RunView``).

Everything comes from disk: the run's ``state.json`` (its finished steps, and the process that
runs it), each training stage's ``losses.jsonl`` (``finetune.callbacks.record_loss``), and for a
run the console started, its launch record (``web-launch.json``: the process, its log and the JSON
it prints at the end). A reload of the page, or a restart of the console, sees the same run; so
does a run typed in a terminal.

    RetrainLauncher(log_dir=Path("data/retrain/logs")).current_run()
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.retrain_watch import FactView, LossCurve, RunView, StepView, Verdict
from finetune.callbacks import LOSSES
from finetune.launcher import last_json
from finetune.report import summary
from finetune.retrain import STEPS
from finetune.runs import Run

LAUNCH = "web-launch.json"  # in the retrain folder: the last run the console started
STAGES = ("sft", "kto", "dpo")
T = TypeVar("T")
TAIL = 12  # progress lines shown
STOPPED = (
    "The run stopped before it finished (its process is gone: killed, or the machine restarted); "
    "the active model is unchanged. `iris retrain --resume` continues it."
)


def newest_run(work_dir: Path) -> Run | None:
    """The run started last, whatever its status."""
    runs = []
    for state_file in (work_dir / "runs").glob("*/state.json"):
        try:
            runs.append(Run.load(state_file.parent))
        except (OSError, ValueError):
            continue  # a folder being created, or damaged: not the one to show
    return max(runs, key=lambda run: str(run.state.get("started", "")), default=None)


def read_launch(work_dir: Path) -> dict[str, Any] | None:
    try:
        launch = json.loads((work_dir / LAUNCH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return launch if isinstance(launch, dict) else None


def alive(pid: object) -> bool:
    """Whether process ``pid`` runs ``iris retrain`` on this machine (a reused pid is another program)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal
    return status[0] != "Z" and b"retrain" in command  # a zombie has ended


def current(work_dir: Path) -> RunView | None:
    """The newest run, or the console's last launch when it has not made its run yet (or never will)."""
    run, launch = newest_run(work_dir), read_launch(work_dir)
    if launch is not None and run is not None and run.state.get("pid") == launch.get("pid"):
        return run_view(run, Path(str(launch.get("log", ""))))
    if launch is not None and (
        run is None or str(launch.get("started", "")) > str(run.state.get("started", ""))
    ):
        return launch_view(launch)
    return run_view(run, None) if run is not None else None


def launch_view(launch: dict[str, Any]) -> RunView:
    """A launched process that has no run folder yet: starting, or ended without one (refused)."""
    log = Path(str(launch.get("log", "")))
    common: dict[str, Any] = {
        "profile": launch.get("profile"),
        "started": launch.get("started"),
        "log_tail": tail(log),
    }
    if alive(launch.get("pid")):
        return RunView(None, "starting", **common)
    printed = _printed(Path(str(launch.get("out", ""))))
    message = str(printed.get("message") or "") or "The retrain ended before it started; see its log."
    return RunView(None, "not-started", message=f"Not started: {message}", **common)


def run_view(run: Run, log: Path | None) -> RunView:
    state = run.state
    status = str(state.get("status"))
    here = state.get("host") in (None, socket.gethostname())
    message = None
    if status == "running" and here and not alive(state.get("pid")):
        status, message = "stopped", STOPPED
    elif status == "failed":
        message = (
            f"The run failed: {state.get('error')}. The active model is unchanged; "
            "`iris retrain --resume` continues it."
        )
    elif status == "refused" and state.get("error"):
        message = f"Refused: {state.get('error')}"
    going_on = status == "running"
    return RunView(
        name=run.name,
        status=status,
        profile=str(state.get("profile", {}).get("name")),
        started=state.get("started"),
        finished=state.get("finished") if not going_on else None,
        steps=steps(run, going_on),
        losses=losses(run),
        log_tail=tail(log) if log else (),
        report=None if going_on else readable(lambda: summary(run)),
        verdict=readable(lambda: verdict(run.result("evaluate"))) if run.done("evaluate") else None,
        candidate=run.result("register").get("name") if run.done("register") else None,
        message=message,
        details={"host": state.get("host")} if not here else {},
    )


def readable(read: Callable[[], T]) -> T | None:
    """What ``read`` makes of a run's state; None for a state this version cannot read (from an
    older version, or damaged by hand): the page shows the rest rather than failing."""
    try:
        return read()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def steps(run: Run, going_on: bool) -> tuple[StepView, ...]:
    views, reached = [], False
    for name in STEPS:
        if run.done(name):
            views.append(StepView(name, "done", run.state["steps"][name]["seconds"]))
        elif not reached:
            reached = True
            views.append(StepView(name, "running" if going_on else "stopped"))
        else:
            views.append(StepView(name, "waiting"))
    return tuple(views)


def losses(run: Run) -> tuple[LossCurve, ...]:
    """Each stage's loss by step: from the finished train step, else from the stages' files so far."""
    if run.done("train"):
        return tuple(
            LossCurve(stage["name"], tuple((int(s), float(v)) for s, v in stage["losses"]), stage["steps"])
            for stage in run.result("train")["stages"]
            if stage["losses"]
        )
    curves = []
    for stage in STAGES:
        points: dict[int, float] = {}
        most = None
        for row in _jsonl(run.dir / "train" / stage / LOSSES):
            points[int(row["step"])] = float(row["loss"])  # a resumed stage logs a step again: the last counts
            most = int(row["max_steps"])
        if points:
            curves.append(LossCurve(stage, tuple(sorted(points.items())), most))
    return tuple(curves)


def verdict(gate: dict[str, Any]) -> Verdict:
    probe = gate.get("general_probe") or {}

    def figures(side: object) -> tuple[int, int] | None:
        return (int(side["right"]), int(side["total"])) if isinstance(side, dict) else None

    facts = tuple(
        FactView(
            question=str(fact["question"]),
            answer=str(fact["answer"]),
            reply=str(fact.get("reply") or ""),
            recalled=bool(fact.get("recalled")),
            known=bool(fact.get("known")),
            wordings=int(fact.get("wordings") or 0),  # unseen wordings asked
            wordings_recalled=int(fact.get("wordings_recalled") or 0),
        )
        for fact in gate.get("facts") or []
    )
    return Verdict(
        passed=bool(gate.get("passed")),
        compared_with=gate.get("compared_with"),
        reasons=tuple(str(reason) for reason in gate.get("reasons") or []),
        facts=facts,
        probe_active=figures(probe.get("active")),
        probe_candidate=figures(probe.get("candidate")),
        next_steps=tuple(str(step) for step in gate.get("next_steps") or []) if not gate.get("passed") else (),
    )


def tail(log: Path, lines: int = TAIL) -> tuple[str, ...]:
    """The log's last progress lines, without any traceback (those are for the log, not a page)."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 64_000))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return ()
    kept, in_traceback = [], False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            in_traceback = line[:1].isspace()  # the frames are indented; the exception line ends it
            continue
        if line.strip():
            kept.append(line[:300])
    return tuple(kept[-lines:])


def _printed(path: Path) -> dict[str, Any]:
    """What a launched run printed last as JSON (its result), or {} while there is none."""
    try:
        return last_json(path.read_text(encoding="utf-8"))
    except OSError:
        return {}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the line being written
    return rows
