"""Which voice says which language: a spoken reply in a voice of the reply's language (issue #28).

espeak-ng has voices for about 100 languages (``espeak-ng --voices``, read once); piper only
those whose ``.onnx`` voice is installed, named as piper names them (``de_DE-thorsten-medium``).
A reply is said by the deployment's (or persona's) voice when that voice speaks its language;
else by a piper voice of the language (piper deployments), else by espeak-ng's; else by none:
the reply stays text, with a note. A voice of another language would mangle every word.

| threat | what happens |
| --- | --- |
| a reply in a language no voice speaks | no voice note; a short note says so |
| an odd detector label (``__label__xx``, ``*``, ``-v``) | only ``[a-z]{2,3}`` codes are looked up |
| ``espeak-ng --voices`` fails or is missing | a voice's language is read from its name (``en-us``) |
| a voice whose language cannot be told (a fake) | it says every reply, as before |
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path

from core.ports import Synthesizer
from core.speech import VOICE_CHECK_TIMEOUT_S, EspeakSynthesizer, PiperSynthesizer

log = logging.getLogger(__name__)

_CODE = re.compile(r"[a-z]{2,3}")
_OTHER = re.compile(r"\(([A-Za-z-]+) (\d+)\)")  # "(zh 5)": another language a voice speaks, its priority


def base(tag: str) -> str:
    """The language of a tag: ``en-us`` → ``en``, ``pt_BR`` → ``pt``, ``en-us+f3`` → ``en``."""
    return re.split(r"[-_+]", tag.strip().casefold(), maxsplit=1)[0]


@cache
def espeak_table(binary: str = "espeak-ng") -> dict[str, dict[str, int]]:
    """espeak-ng's voices (what ``-v`` takes) and the languages each speaks, with espeak-ng's priority
    (lower: a better voice for it); empty if it cannot say."""
    found = shutil.which(binary)
    if found is None:
        return {}
    try:
        listed = subprocess.run(
            [found, "--voices"], capture_output=True, text=True, timeout=VOICE_CHECK_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("espeak-ng --voices failed (%s): spoken replies keep the configured voice", error)
        return {}
    table: dict[str, dict[str, int]] = {}
    for line in listed.splitlines()[1:]:  # Pty Language Age/Gender VoiceName File Other Languages
        columns = line.split()
        if len(columns) < 5 or columns[1] in table:
            continue
        # Ranked by espeak-ng's own priorities ("fr-fr ... (fr 5)" before "fr-be ... (fr 8)");
        # a variant that does not list its base language ("en-us-nyc") comes last for it.
        languages = {base(columns[1]): 99}
        for code, priority in _OTHER.findall(line):
            languages[base(code)] = min(int(priority), languages.get(base(code), 99))
        table[columns[1]] = languages
    return table


def espeak_voice(code: str, binary: str = "espeak-ng") -> str | None:
    """espeak-ng's voice for language ``code``: one named as the code (``de``), else the one espeak-ng
    ranks first for it (``fr-fr`` for ``fr``, ``cmn`` for ``zh``); None: none speaks it."""
    table = espeak_table(binary)
    if code in table:
        return code
    speaking = [(languages[code], voice) for voice, languages in table.items() if code in languages]
    return min(speaking)[1] if speaking else None


def spoken_by(voice: Synthesizer) -> frozenset[str] | None:
    """The languages ``voice`` speaks; None: it cannot be told (it then says every reply)."""
    if isinstance(voice, EspeakSynthesizer):
        name = voice.voice.split("+")[0]  # "en-us+f3": voice en-us, variant f3
        return frozenset(espeak_table(voice.binary).get(name) or {base(name)})
    if isinstance(voice, PiperSynthesizer):
        return frozenset({base(voice.model.name)})
    return None


def voice_for(voice: Synthesizer, code: str) -> Synthesizer | None:
    """A synthesizer that says language ``code``: ``voice`` when it speaks it (or cannot be told),
    else a piper voice of it (a piper ``voice``), else espeak-ng's; None: no voice speaks it (blocking)."""
    languages = spoken_by(voice)
    if languages is None or code in languages:
        return voice
    if not _CODE.fullmatch(code):
        return None
    if isinstance(voice, PiperSynthesizer):
        model = _piper_model(voice, code)
        if model is not None:
            return voice.voiced(str(model))
    binary = voice.binary if isinstance(voice, EspeakSynthesizer) else "espeak-ng"
    found = espeak_voice(code, binary)
    if found is None:
        return None
    if isinstance(voice, EspeakSynthesizer):
        return replace(voice, voice=found)
    return EspeakSynthesizer(voice=found, binary=binary)


def _piper_model(voice: PiperSynthesizer, code: str) -> Path | None:
    """An installed piper voice of ``code`` (its ``.onnx.json`` beside it), beside the configured
    voice or in piper's environment."""
    environment = voice.python.parent.parent
    candidates = [
        *sorted(voice.model.parent.glob(f"{code}_*.onnx")),
        *sorted(environment.glob(f"lib/python3*/site-packages/**/{code}_*.onnx")),
    ]
    return next((c for c in candidates if Path(f"{c}.json").is_file()), None)
