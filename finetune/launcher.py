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
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.files import atomic_write
from core.ports import RetrainOutcome

if TYPE_CHECKING:
    from core.retrain_watch import RunView

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
            last_json(stdout),
            self.log_path,
            time.perf_counter() - self.started,
            timed_out,
        )


def last_json(stdout: str) -> dict[str, Any]:
    """The last line of ``stdout`` that is a JSON object (``iris retrain --json``'s result), or {}."""
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
        work_dir: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.work_dir = work_dir or log_dir.parent  # the retrain folder: runs/, retrain.lock
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
        ab_share: float | None = None,
    ) -> list[str]:
        flags = ["retrain", "--json"]
        if profile:
            flags += ["--profile", profile]
        if ab_share is not None:
            flags += ["--ab", f"{ab_share:g}"]
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

    # --- core.retrain_watch.RetrainRuns: a run started and followed from the web console ---

    def profiles(self) -> list[str]:
        from finetune.profiles import PROFILES

        return list(PROFILES)

    def start_run(self, profile: str, ab_share: float | None, actor: str) -> None:
        """Start ``iris retrain`` detached (its output in files, so it outlives a restart of whoever
        started it) and record it in ``web-launch.json``; refuse while a run goes on.

        The child audits its start and outcome as ``actor``. Launches are serialized by a lock
        file, so two presses at once start one run; a run started meanwhile in a terminal or on
        another machine makes the child refuse, which the next ``current_run`` shows.
        """
        from core.retrain_watch import ACTOR_ENV, RetrainRefused
        from finetune.run_watch import LAUNCH, current

        if profile not in self.profiles():
            raise RetrainRefused(
                f"Unknown profile {profile[:40]!r}: choose one of {', '.join(self.profiles())}."
            )
        if ab_share is not None and not 0 < ab_share < 1:
            raise RetrainRefused("The A/B share is the candidate's share of conversations: between 0 and 1.")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with (self.work_dir / "web-launch.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            going = current(self.work_dir)
            if going is not None and going.going_on:
                what = going.name or f"a {going.profile} run starting"
                raise RetrainRefused(
                    f"A retrain is already running ({what}, started {going.started}); one at a time: "
                    "wait for it to end."
                )
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
            log_path, out_path = self.log_dir / f"retrain-{stamp}.log", self.log_dir / f"retrain-{stamp}.json"
            with log_path.open("w") as log_file, out_path.open("w") as out_file:
                process = subprocess.Popen(
                    self.arguments(profile=profile, ab_share=ab_share),
                    stdout=out_file,  # a file, not a pipe: the run ends well if its starter is gone
                    stderr=log_file,
                    stdin=subprocess.DEVNULL,
                    cwd=self.cwd,
                    env={**os.environ, **self.env, ACTOR_ENV: actor, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # a Ctrl+C of the console does not stop it
                )
            launch = {
                "pid": process.pid,
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "profile": profile,
                "ab_share": ab_share,
                "actor": actor,
                "log": str(log_path),
                "out": str(out_path),
            }
            atomic_write(self.work_dir / LAUNCH, json.dumps(launch, indent=1).encode())
        # Reap it when it ends, so that its pid is gone rather than a zombie's.
        threading.Thread(target=process.wait, name="retrain-reaper", daemon=True).start()

    def current_run(self) -> RunView | None:
        from finetune.run_watch import current

        return current(self.work_dir)
