"""Files written whole: a reader, a crash or a full disk never leaves half of one under its name.

Everything Iris writes whole (exports, datasets, a run's ``state.json``, GGUFs, spoken audio)
goes through here: the bytes go to a temporary name in the same folder, are flushed to the
disk (``fsync``), renamed over the target (``os.replace``, atomic on one file system), and
the folder is fsynced so the rename itself survives a power cut. On any failure (a full disk,
a read-only folder) the temporary file is removed and the target is as it was.

    from core.files import atomic_write, replacing
    atomic_write(path, data, private=True)      # people's words: created 0600
    with replacing(out_dir / "hf") as partial:  # a folder or file another library writes
        dataset.save_to_disk(str(partial))
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"  # every temporary name ends so: an interrupted write is easy to recognise


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Put ``data`` at ``path`` in one fsynced rename; on failure ``path`` is unchanged, no temporary left.

    ``private`` creates the file with mode 0600 (files that hold people's words);
    otherwise 0666 less the umask, as ``open`` would.
    """
    temporary = temporary_name(path)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        # os.write names no file: say which one could not be written.
        raise _naming(error, path) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` for a library or tool to write (a file or a folder).

    When the block ends without error, what was written is fsynced and renamed over ``target``
    (an existing folder there is removed first); when it raises, the temporary is removed and
    ``target`` is left as it was.
    """
    temporary = temporary_name(target)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"nothing was written to {temporary}")
        _fsync_tree(temporary)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        raise _naming(error, target) from None
    except BaseException:
        _remove(temporary)
        raise
    fsync_folder(target.parent)


def temporary_name(target: Path) -> Path:
    """A fresh name beside ``target``, hidden and unique, so that two writers never share one."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL}")


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file and folder under a folder, to the disk."""
    if path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                _fsync_file(Path(folder) / name)
            fsync_folder(Path(folder))
    else:
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` with a file name a person can act on (the target, not a temporary name)."""
    if error.errno is None or (error.filename is not None and PARTIAL not in str(error.filename)):
        return error
    return type(error)(error.errno, error.strerror, str(path))
