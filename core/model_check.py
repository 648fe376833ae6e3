"""Whether a GGUF loads and answers, tried in a child process where a crash of llama.cpp costs nothing.

``check_gguf`` runs ``core.generation.answer_in_child`` in a fresh Python: a damaged file may
abort or segfault llama.cpp, which would end the bot. ``CheckedModels`` remembers the files that
passed, so a restart serving the same file starts no child.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECK_QUESTION = "Say hello."
CHECK_TIMEOUT_S = 120.0
CHECK_MARK = "iris-check:"  # marks the child's one result line among whatever else it prints


class ModelUnloadable(Exception):
    """A GGUF that does not load or answer; ``str(error)`` is one line naming the file and the problem."""


def check_gguf(
    path: str | Path,
    question: str = CHECK_QUESTION,
    max_tokens: int = 16,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> str:
    """Load ``path`` and answer ``question`` with it as the bots do, in a child process; return the answer.

    A damaged GGUF may raise, or crash llama.cpp natively (an abort or a segfault
    ends the whole process), so it is tried in a fresh Python process that may
    die in the caller's place. Raise ``ModelUnloadable`` when it does not load,
    crashes, takes over ``timeout_s`` or answers nothing.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelUnloadable(f"{file}: no such file")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import sys; from core.generation import answer_in_child; answer_in_child(sys.argv[1:])"
    command = [sys.executable, "-c", code, str(file), question, str(max_tokens)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelUnloadable(f"{file.name} did not answer within {timeout_s:.0f} s") from None
    if done.returncode < 0:
        raise ModelUnloadable(f"{file.name} crashed llama.cpp ({signal.Signals(-done.returncode).name})")
    results = [line[len(CHECK_MARK) :] for line in done.stdout.splitlines() if line.startswith(CHECK_MARK)]
    if not results:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelUnloadable(f"{file.name} could not be checked (exit status {done.returncode}: {last})")
    result = json.loads(results[-1])
    if "error" in result:
        raise ModelUnloadable(f"{file.name} {result['error']}")
    answer = str(result["answer"]).strip()
    if not answer:
        raise ModelUnloadable(f"{file.name} gave an empty answer to {question!r}")
    return answer


CHECKED_RECORD = "checked-models.json"  # in the data dir: the GGUF files that passed check_gguf


def default_checked_record() -> Path:
    """Where a generator built without a data dir remembers the files it checked: the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iris" / CHECKED_RECORD


class CheckedModels:
    """The GGUF files that loaded and answered in ``check_gguf``'s child, remembered in a JSON file.

    A check costs a fresh Python, llama.cpp and the file once more (seconds), so it
    is paid once per file rather than at every start. A file counts as checked only
    while it is the same file: its resolved path, size, mtime_ns, inode and device,
    and the same llama-cpp-python (a newer llama.cpp may crash on what the old one
    loaded). A file replaced or modified in place is checked again. The record is
    written whole (``core.files.atomic_write``); one that cannot be read or parsed
    counts as empty and one that cannot be written is only logged: the worst either
    costs is a check too many. Two processes writing at once may lose one entry, with
    the same cost.
    """

    def __init__(self, record: Path) -> None:
        self.record = record

    def ensure(self, path: str | Path) -> None:
        """Return at once for a file checked before; else check it in a child and remember it.

        Raise ``ModelUnloadable`` (as ``check_gguf``) when it does not load, crashes or answers nothing.
        """
        before = _file_identity(path)
        if before is not None and self._entries().get(before[0]) == before[1]:
            return
        log.info("checking %s in a child process before loading it here", Path(path).name)
        check_gguf(path)
        after = _file_identity(path)
        if after is not None and after == before:  # not the file checked if it changed meanwhile
            self._remember(*after)

    def _remember(self, key: str, identity: dict[str, int | str]) -> None:
        entries = {name: entry for name, entry in self._entries().items() if _still_there(name)}
        entries[key] = identity
        text = json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n"
        try:
            from core.files import atomic_write

            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.record, text.encode())
        except OSError as error:
            log.warning("could not remember that %s loads (%s); it is checked again next start", key, error)

    def _entries(self) -> dict[str, Any]:
        try:
            content = json.loads(self.record.read_text(encoding="utf-8"))
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError: nesting beyond json's depth.
        except (OSError, ValueError, RecursionError) as error:
            if not isinstance(error, FileNotFoundError):
                log.warning("ignoring the record of checked models %s: %s", self.record, one_line(error))
            return {}
        files = content.get("files") if isinstance(content, dict) else None
        return files if isinstance(files, dict) else {}


def _still_there(name: str) -> bool:
    """Whether a file named in the record still exists (so that the record does not grow forever)."""
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte, from a damaged record
        return False


def _file_identity(path: str | Path) -> tuple[str, dict[str, int | str]] | None:
    """``path`` resolved, and what changes when that file is replaced or modified; None: no such file."""
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:
        return None
    identity: dict[str, int | str] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
        "llama_cpp_python": _llama_cpp_version(),
    }
    return str(resolved), identity


@cache
def _llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


def one_line(error: BaseException) -> str:
    """An error as one short line, for a log line or a person."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]
