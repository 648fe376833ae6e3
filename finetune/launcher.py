"""Start ``iris retrain`` as a separate process and report how it ended (the chat's /retrain).

Training holds the CPU for minutes and imports torch; the bots must keep
answering meanwhile, so the run is another process: it reads the same settings
(environment and ``.env``), writes its progress to a log file, prints one JSON
object at the end, and promotes through the model registry, which the running
generator checks before every reply. ``RetrainLauncher`` implements
``core.ports.Retrainer``; the composition root hands it to ``ChatService``.

    RetrainLauncher(log_dir=Path("data/retrain/logs")).retrain("cpu-tiny")   # blocking
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.ports import RetrainOutcome

# `iris retrain` exits 0 when the run ended (promoted, refused or a dry run), 1 when it
# failed and 2 when it could not start (another run holds the lock, nothing to resume, a
# bad profile).
EXIT_FAILED, EXIT_NOT_STARTED = 1, 2


def iris_command() -> list[str]:
    """The ``iris`` console script of this environment, or the same entry point through Python."""
    script = Path(sys.executable).with_name("iris")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from bots.cli import main; sys.argv[0] = 'iris'; main()"]


@dataclass
class LaunchResult:
    """What the process did: its exit, the JSON it printed, and where its log is."""

    returncode: int
    report: dict[str, Any]
    log_path: Path
    seconds: float
    timed_out: bool = False

    @property
    def status(self) -> str:
        if self.report.get("status"):
            return str(self.report["status"])
        return "failed"

    def outcome(self) -> RetrainOutcome:
        """The run as ``core.ports.RetrainOutcome``: what a chat shows, never a traceback."""
        status = self.status
        name = self.report.get("name")
        if self.timed_out:
            summary = (
                f"The retrain took longer than allowed and was stopped after {self.seconds / 60:.0f} min; "
                "the active model is unchanged. `iris retrain --resume` continues it."
            )
            return RetrainOutcome(False, False, name, summary)
        if self.returncode < 0:
            signame = signal.Signals(-self.returncode).name
            summary = (
                f"The retrain was stopped ({signame}) before it finished; the active model is unchanged. "
                "`iris retrain --resume` continues it from its last checkpoint."
            )
            return RetrainOutcome(False, False, name, summary)
        message = str(self.report.get("message") or "")
        if not self.report:
            message = f"The retrain ended without a result (exit {self.returncode}); see {self.log_path}."
        ok = status in ("promoted", "ab-test", "refused", "dry-run")
        return RetrainOutcome(ok, status == "promoted", name, message)


@dataclass
class Launch:
    """A running ``iris retrain`` process."""

    process: subprocess.Popen[str]
    log_path: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the converter runs as a grandchild)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float | None = None) -> LaunchResult:
        timed_out = False
        try:
            stdout, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill(signal.SIGTERM)
            try:
                stdout, _ = self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                stdout, _ = self.process.communicate()
        return LaunchResult(
            self.process.returncode,
            _last_json(stdout),
            self.log_path,
            time.perf_counter() - self.started,
            timed_out,
        )


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


class RetrainLauncher:
    """Runs ``iris retrain --json`` in its own process group; one log file per launch.

    ``env`` adds to (or overrides) this process's environment for the child;
    ``timeout`` (seconds) stops a run that takes too long.
    """

    def __init__(
        self,
        *,
        log_dir: Path,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.command = list(command) if command is not None else iris_command()
        self.env = dict(env or {})
        self.cwd = cwd
        self.timeout = timeout

    def arguments(
        self,
        *,
        profile: str | None = None,
        resume: bool = False,
        dry_run: bool = False,
        force: bool = False,
    ) -> list[str]:
        flags = ["retrain", "--json"]
        if profile:
            flags += ["--profile", profile]
        switches = (("--resume", resume), ("--dry-run", dry_run), ("--force", force))
        flags += [flag for flag, wanted in switches if wanted]
        return [*self.command, *flags]

    def start(self, **options: Any) -> Launch:
        """Start a run; ``options`` are ``profile``, ``resume``, ``dry_run`` and ``force``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        log_path = self.log_dir / f"retrain-{stamp}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                self.arguments(**options),
                stdout=subprocess.PIPE,
                stderr=log_file,  # the child keeps its own handle to the file
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self.cwd,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # its own process group, so a stop reaches the converter too
            )
        return Launch(process, log_path)

    def run(self, **options: Any) -> LaunchResult:
        """Start a run and wait for it (blocking)."""
        return self.start(**options).wait(self.timeout)

    def retrain(self, profile: str | None = None) -> RetrainOutcome:
        """``core.ports.Retrainer``: a whole retrain in a separate process; blocking."""
        return self.run(profile=profile).outcome()
