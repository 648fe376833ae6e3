"""Hostile audio files, built in memory: headers that lie about the length, hours packed into
a few MB, decompression bombs, and the non-speech whisper likes to put words on.

Long files are built by encoding a second of Opus once and muxing its packets again and again
(an Opus packet decodes on its own), so two hours take a second or two to build, not an
encoder's minutes. Each function returns the file's bytes; the tests and
``bench/hostile.py`` share them.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RATE = 48000  # Opus's own rate
FIXTURES = Path(__file__).parent / "fixtures"

Signal = Callable[[int, int], Any]  # (number of samples, rate) -> float32 samples in [-1, 1]


# --- signals ---------------------------------------------------------------------------------


def quiet_tone(count: int, rate: int) -> Any:
    t = np.arange(count) / rate
    return (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def zeros(count: int, rate: int) -> Any:
    return np.zeros(count, dtype=np.float32)


def white_noise(count: int, rate: int) -> Any:
    return np.random.default_rng(7).uniform(-0.3, 0.3, count).astype(np.float32)


def chords(count: int, rate: int) -> Any:
    """Major triads with overtones, a new chord every half second: music, no voice."""
    t = np.arange(count) / rate
    roots = np.array([220.0, 261.63, 196.0, 174.61])[(t // 0.5).astype(int) % 4]
    signal = np.zeros(count)
    for ratio in (1.0, 1.26, 1.5):  # root, major third, fifth
        for overtone, gain in ((1, 1.0), (2, 0.4), (3, 0.2)):
            signal += gain * np.sin(2 * np.pi * roots * ratio * overtone * t)
    envelope = np.minimum(1.0, (t % 0.5) * 20) * np.exp(-(t % 0.5) * 3)  # each chord struck, fading
    return (0.12 * signal * envelope).astype(np.float32)


def breath_burst(count: int, rate: int) -> Any:
    """Low-passed noise under a swell and fade: what a breath into a phone sounds like."""
    noise = np.random.default_rng(11).normal(0, 1, count)
    smooth = np.convolve(noise, np.ones(12) / 12, mode="same")
    envelope = np.sin(np.linspace(0, np.pi, count)) ** 2
    return (0.25 * smooth * envelope).astype(np.float32)


# --- encoding --------------------------------------------------------------------------------


def _frames(samples: Any, rate: int, step: int = 960) -> Any:
    import av

    for start in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + step], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        yield frame


def encode(samples: Any, container: str = "ogg", *, rate: int = RATE, codec: str = "libopus") -> bytes:
    """Mono float32 samples encoded as one file (OGG/Opus by default)."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as file:
        stream = file.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        if codec == "libopus":
            stream.bit_rate = 24000
        for frame in _frames(samples, rate):
            file.mux(stream.encode(frame))
        file.mux(stream.encode(None))
    return out.getvalue()


def looped_opus(
    seconds: float,
    container: str = "ogg",
    *,
    signal: Signal = quiet_tone,
    bitrate: int = 6000,
    options: dict[str, str] | None = None,
) -> bytes:
    """``seconds`` of constant-bitrate Opus in ``container``, from one encoded second muxed over and over."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format=container, options=options or {}) as file:
        stream = file.add_stream("libopus", rate=RATE, layout="mono")
        assert isinstance(stream, av.AudioStream)
        stream.bit_rate = bitrate
        stream.options = {"vbr": "off", "frame_duration": "60"}  # 45 bytes every 60 ms at 6 kbit/s
        second = [p for f in _frames(signal(RATE, RATE), RATE) for p in stream.encode(f)]
        second += stream.encode(None)
        payloads = [bytes(p) for p in second if p.size and p.duration]
        assert second[0].duration is not None
        step = int(second[0].duration)  # one packet's samples, in the stream's 1/48000 time base
        time_base = second[0].time_base
        for index in range(int(seconds * RATE) // step):
            packet = av.Packet(payloads[index % len(payloads)])
            packet.pts = packet.dts = index * step
            packet.duration = step
            packet.time_base = time_base
            packet.stream = stream
            file.mux(packet)
    return out.getvalue()


def wav(samples: Any, rate: int, *, channels: int = 1, claimed_seconds: float | None = None) -> bytes:
    """16-bit PCM WAV; with ``claimed_seconds`` the RIFF and data sizes say that length instead."""
    pcm: bytes = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    claimed = len(pcm) if claimed_seconds is None else int(claimed_seconds * rate) * 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + claimed)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", claimed)
        + pcm
    )


# --- headers that lie ------------------------------------------------------------------------


def _set_webm_duration(data: bytes, seconds: float) -> bytes:
    """Rewrite Matroska's Segment Duration (element 0x4489, a float in milliseconds by default)."""
    at = data.find(b"\x44\x89")
    if at < 0:
        raise ValueError("no Duration element")
    size = data[at + 2] & 0x7F  # 0x88: 8 bytes, 0x84: 4
    value = struct.pack(">d", seconds * 1000) if size == 8 else struct.pack(">f", seconds * 1000)
    return data[: at + 3] + value + data[at + 3 + size :]


def _set_mp4_durations(data: bytes, seconds: float) -> bytes:
    """Rewrite the movie (mvhd), track (tkhd) and media (mdhd) durations; the sample tables stay true."""
    out = bytearray(data)
    for box in (b"mvhd", b"tkhd", b"mdhd"):
        at = out.find(box)
        while at >= 0:
            version = out[at + 4]
            if box == b"tkhd":  # no timescale of its own: the movie's
                scale = _mvhd_timescale(out)
                field = at + 4 + (28 if version else 20)
            else:
                scale_at = at + 4 + (20 if version else 12)
                scale = struct.unpack(">I", out[scale_at : scale_at + 4])[0]
                field = scale_at + 4
            value = int(seconds * scale)
            if version:
                out[field : field + 8] = struct.pack(">Q", value)
            else:
                out[field : field + 4] = struct.pack(">I", value)
            at = out.find(box, at + 4)
    return bytes(out)


def _mvhd_timescale(data: bytearray) -> int:
    at = data.find(b"mvhd")
    offset = at + 4 + (20 if data[at + 4] else 12)
    return int(struct.unpack(">I", data[offset : offset + 4])[0])


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _set_last_ogg_granule(data: bytes, seconds: float) -> bytes:
    """Make the last Ogg page's granule position say ``seconds``: FFmpeg reads the length from it."""
    at = data.rfind(b"OggS")
    segments = data[at + 26]
    end = at + 27 + segments + sum(data[at + 27 : at + 27 + segments])
    page = bytearray(data[at:end])
    page[6:14] = struct.pack("<q", int(seconds * RATE) + 312)  # plus Opus's usual pre-skip
    page[22:26] = b"\0\0\0\0"
    page[22:26] = struct.pack("<I", _ogg_crc(bytes(page)))
    return data[:at] + bytes(page) + data[end:]


def _zero_flac_total(data: bytes) -> bytes:
    """Set STREAMINFO's total-samples field (36 bits) to 0, FLAC's "unknown"."""
    info = 8  # after "fLaC" and the metadata block header
    packed = int.from_bytes(data[info + 10 : info + 18], "big") & ~((1 << 36) - 1)
    return data[: info + 10] + packed.to_bytes(8, "big") + data[info + 18 :]


# --- the hostile files -----------------------------------------------------------------------


def lying_webm(seconds: float = 7200, claims: float = 10) -> bytes:
    """WebM/Opus whose Segment Duration says ``claims`` seconds; it holds ``seconds`` (6.2 MB for 2 h)."""
    return _set_webm_duration(looped_opus(seconds, "webm"), claims)


def lying_mp4(seconds: float = 7200, claims: float = 10) -> bytes:
    """MP4/Opus whose mvhd, tkhd and mdhd say ``claims`` seconds; its sample table holds ``seconds``."""
    data = looped_opus(seconds, "mp4", options={"use_editlist": "0", "strict": "experimental"})
    return _set_mp4_durations(data, claims)


def lying_ogg(seconds: float = 7200, claims: float = 10) -> bytes:
    """OGG/Opus (no length in its header) whose last granule position says ``claims`` seconds."""
    return _set_last_ogg_granule(looped_opus(seconds, "ogg"), claims)


def long_ogg(seconds: float = 7200) -> bytes:
    """An honest OGG/Opus voice note of ``seconds`` (2 h: 5.7 MB), for a platform that claims 3 s."""
    return looped_opus(seconds, "ogg")


def lying_wav(seconds: float = 1200, claims: float = 10, rate: int = 8000) -> bytes:
    """16-bit WAV whose RIFF and data sizes say ``claims`` seconds; ``seconds`` of tone follow (19 MB)."""
    return wav(quiet_tone(int(seconds * rate), rate), rate, claimed_seconds=claims)


def twenty_mb_opus(seconds: float = 7 * 3600) -> bytes:
    """About 20 MB of 6 kbit/s OGG/Opus: seven hours."""
    return looped_opus(seconds, "ogg")


def silence_bomb(seconds: float = 2 * 3600, rate: int = 8000) -> bytes:
    """Hours of digital silence as a tiny FLAC whose header does not say how long it is."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="flac") as file:
        stream = file.add_stream("flac", rate=rate, layout="mono", format="s16")
        block = av.AudioFrame.from_ndarray(
            np.zeros((1, rate * 10), dtype=np.int16), format="s16", layout="mono"
        )
        block.sample_rate = rate
        for index in range(int(seconds // 10)):
            block.pts = index * rate * 10
            file.mux(stream.encode(block))
        file.mux(stream.encode(None))
    return _zero_flac_total(out.getvalue())


def silence(seconds: float = 5) -> bytes:
    """Digital silence as an OGG/Opus voice note."""
    if seconds > 30:
        return looped_opus(seconds, signal=zeros, bitrate=24000)
    return encode(zeros(int(seconds * RATE), RATE))


def noise(seconds: float = 10) -> bytes:
    """White noise as an OGG/Opus voice note."""
    return encode(white_noise(int(seconds * RATE), RATE))


def music(seconds: float = 10) -> bytes:
    """Struck major chords with overtones as an OGG/Opus voice note: music, no voice."""
    return encode(chords(int(seconds * RATE), RATE))


def breath(seconds: float = 0.5) -> bytes:
    """A short breath-like burst of low-passed noise, then a moment of quiet, as a voice note."""
    count = int(seconds * RATE)
    return encode(np.concatenate([breath_burst(count, RATE), zeros(RATE // 2, RATE)]))


def backwards(name: str = "languages/ten_seconds.ogg") -> bytes:
    """A spoken fixture played backwards: speech to the VAD, no language to whisper."""
    import av

    with av.open(str(FIXTURES / name)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [out for frame in container.decode(audio=0) for out in resampler.resample(frame)]
    samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    return encode(samples[::-1].copy())


def truncated() -> bytes:
    """The first 3,000 bytes of a real voice note: what a dropped download leaves."""
    return (FIXTURES / "capital_of_france.ogg").read_bytes()[:3000]


def garbage_ogg() -> bytes:
    """An Ogg capture pattern followed by random bytes."""
    return b"OggS" + np.random.default_rng(3).bytes(50_000)


def png() -> bytes:
    """A PNG signature and a header chunk: an image sent as audio."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 40


def many_channels(seconds: float = 2, channels: int = 8, rate: int = 192000) -> bytes:
    """8-channel 192 kHz WAV: 3 MB of samples for every second of sound."""
    samples = np.repeat(quiet_tone(int(seconds * rate), rate), channels)
    return wav(samples, rate, channels=channels)
