"""One piper process kept running per voice, so its start (a new Python, a 63 MB voice: about
0.6 s) is paid once rather than on every spoken reply.

piper stays a separate program, run from its own environment and never imported (GPL-3.0; see
``core.speech``). Its command line already serves many utterances from one process: with
``--output-dir`` it speaks each line read on stdin into a WAV file of its own and logs
``Wrote <path>`` on stderr when that file is complete. That log line is where one utterance
ends, so the audio of each reply is read back whole, never cut or run into the next one.
``--output-raw`` streams every line into one byte stream with nothing between utterances.

One utterance at a time per process (a lock): piper itself speaks one line at a time. A process
that died (killed, out of memory) is replaced on the next utterance; a process that takes longer
than the timeout is killed. The process ends when the synthesizer is closed, garbage-collected,
or Iris exits (its stdin closes and piper stops at the end of its input).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path

from core.ports import SynthesisFailed

log = logging.getLogger(__name__)

_WROTE = re.compile(r"Wrote (.+\.wav)\s*$")


class KeptPiper:
    """``python -m piper -m <voice> --output-dir <private dir>``, started on first use and kept."""

    def __init__(self, python: Path, model: Path, timeout_s: float) -> None:
        self.python = python
        self.model = model
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._folder: Path | None = None
        self._finalizer: weakref.finalize[..., KeptPiper] | None = None
        self.starts = 0  # how many processes were started: the tests and the bench read it

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def say(self, line: str) -> bytes:
        """The WAV file piper wrote for one line of text (no newline in it).

        A process found dead (killed between two replies, perhaps while this line was on its
        way) is replaced and the line said once more by the new one.
        """
        with self._lock:
            for _ in range(2):
                process = self._running()
                assert process.stdin is not None
                try:
                    process.stdin.write(line.encode() + b"\n")
                    process.stdin.flush()
                    return self._written()
                except (_Died, BrokenPipeError, ConnectionResetError) as error:
                    self._stop()
                    died = error
            raise SynthesisFailed(f"piper failed: {died}")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        if self._process is not None:
            log.warning("piper exited (%s); starting it again", self._process.returncode)
            self._stop()
        self._folder = Path(tempfile.mkdtemp(prefix="iris-piper-"))
        command = [str(self.python), "-m", "piper", "-m", str(self.model), "--output-dir", str(self._folder)]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONIOENCODING": "utf-8"},
            )
        except OSError as error:
            self._stop()
            raise SynthesisFailed(f"piper did not start ({type(error).__name__})") from error
        self._process = process
        self._lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(process, self._lines), daemon=True, name="piper-log").start()
        self._finalizer = weakref.finalize(self, _end, process, self._folder)
        self.starts += 1
        return process

    def _written(self) -> bytes:
        """Wait for piper's ``Wrote <path>``; its other lines are kept for the error message."""
        deadline = time.monotonic() + self.timeout_s
        said: deque[str] = deque(maxlen=3)
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._stop(kill=True)
                raise SynthesisFailed(f"piper took more than {self.timeout_s:.0f} s") from None
            if line is None:  # stderr closed: the process is gone
                raise _Died(said[-1][:200] if said else "it exited with no message")
            found = _WROTE.search(line)
            if found is None:
                if line.strip():
                    said.append(line.strip())
                continue
            path = Path(found.group(1))
            if self._folder is None or path.parent != self._folder:
                continue
            try:
                return path.read_bytes()
            except OSError as error:
                raise SynthesisFailed(f"piper's audio is unreadable ({type(error).__name__})") from error
            finally:
                path.unlink(missing_ok=True)

    def _stop(self, kill: bool = False) -> None:
        if kill and self._process is not None:
            self._process.kill()
        if self._finalizer is not None:
            self._finalizer()  # ends the process and removes its folder, once
        self._finalizer = None
        self._process = None
        self._folder = None


class _Died(Exception):
    """piper's process ended before it wrote the utterance."""


def _read_lines(process: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
    assert process.stderr is not None
    for raw in process.stderr:
        lines.put(raw.decode(errors="replace"))
    lines.put(None)


def _end(process: subprocess.Popen[bytes], folder: Path) -> None:
    """Close piper's input (it stops at the end of it), and kill it if it does not."""
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
    shutil.rmtree(folder, ignore_errors=True)
