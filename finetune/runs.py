"""A retrain run on disk: its folder, its ``state.json``, and the lock that allows one run at a time."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast

from core.files import atomic_write
from finetune.profiles import Profile

Progress = Callable[[str], None]
Status = Literal["running", "promoted", "ab-test", "refused", "failed", "dry-run"]


class StepRecord(TypedDict):
    result: dict[str, Any]  # what the step returned (finetune.retrain's step_* methods)
    seconds: float


class RunState(TypedDict):
    """``state.json``: what a resumed run reads back."""

    name: str
    status: str  # a Status, or "discarded" once /forget removed words it trained on (finetune.copies)
    started: str  # ISO 8601, UTC
    profile: dict[str, Any]  # Profile's fields (dataclasses.asdict)
    steps: dict[str, StepRecord]  # the finished steps, in order
    attempts: int
    error: NotRequired[str | None]
    finished: NotRequired[str]
    plan: NotRequired[dict[str, Any]]  # a dry run's plan
    # The process running it now and its machine: whether a "running" run still runs (finetune.run_watch).
    pid: NotRequired[int]
    host: NotRequired[str]


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock."""


class Run:
    """A run's folder and ``state.json``: what finished, with its results and timings."""

    def __init__(self, directory: Path, state: RunState) -> None:
        self.dir = directory
        self.state = state

    @classmethod
    def create(cls, work_dir: Path, profile: Profile, *, dry_run: bool) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{profile.name}-{stamp}" + ("-dry-run" if dry_run else "")
        directory = work_dir / "runs" / name
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = work_dir / "runs" / f"{name}-{suffix}"
        directory.mkdir(parents=True)
        state: RunState = {
            "name": directory.name,
            "status": "dry-run" if dry_run else "running",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.to_dict(),
            "steps": {},
            "attempts": 1,
        }
        run = cls(directory, state)
        run.claim()
        try:
            run.save()
        except OSError:
            directory.rmdir()  # a run folder without its state.json would only puzzle a reader
            raise
        return run

    @classmethod
    def load(cls, directory: Path) -> Run:
        return cls(
            directory, cast(RunState, json.loads((directory / "state.json").read_text(encoding="utf-8")))
        )

    @classmethod
    def unfinished(cls, work_dir: Path) -> Run | None:
        """The newest run that was killed or failed, if any."""
        runs = []
        for state_file in (work_dir / "runs").glob("*/state.json"):
            try:
                run = cls.load(state_file.parent)
            except (OSError, ValueError):
                continue
            if run.state.get("status") in ("running", "failed"):
                runs.append(run)
        return max(runs, key=lambda run: run.state["started"], default=None)

    @property
    def name(self) -> str:
        return self.state["name"]

    @property
    def profile(self) -> Profile:
        return Profile.from_dict(self.state["profile"])

    def claim(self) -> None:
        """Name this process and machine as the run's (a resumed run is taken over); saved with the state."""
        self.state["pid"] = os.getpid()
        self.state["host"] = socket.gethostname()

    def done(self, step: str) -> bool:
        return step in self.state["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return dict(self.state["steps"][step]["result"])

    def record(self, step: str, result: dict[str, Any], seconds: float) -> None:
        self.state["steps"][step] = {"result": result, "seconds": round(seconds, 2)}
        self.save()

    def finish(self, status: Status, error: str | None = None) -> None:
        self.state["status"] = status
        self.state["error"] = error
        self.state["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.save()

    def save(self) -> None:
        """Write ``state.json`` whole: a kill or a full disk mid-write keeps the previous state."""
        data = json.dumps(self.state, indent=1, ensure_ascii=False, default=str).encode()
        atomic_write(self.dir / "state.json", data)


@contextmanager
def exclusive(work_dir: Path) -> Iterator[None]:
    """One retrain at a time per retrain folder (the CLI and a chat /retrain share it)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / "retrain.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainBusy("another retrain is running; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
