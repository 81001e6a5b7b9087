"""Step one of every question's path: *prepare* a video, image or ``.vidtok`` for questions, before any
decoding or encoding.

    prepare (this module) -> plan (planning.py, per question) -> materialize (materialize.py)

Preparing resolves, once, everything planning needs: the frames' times (the sampling plan of a video, or
the times stored in its features), the subtitles that apply now, the video's length, and where its
features come from. A video's features live in the user cache under its content hash, the vision
encoder and the frame rate: the file is hashed (sampled bytes, fast) and the cache entry opened and
checked, and nothing else is read. Only a video that is not cached yet is probed (once); its encode is
then planned (``EncodeJob``: the sampling plan, the part to encode, the subtitles to store) and left to
``materialize``, which runs it exactly as planned. So a question that cannot be answered is refused by
planning before minutes of encoding, and the cache stays as it was.

Subtitles are what they are now, not when the video was cached (``llamavid.media.subtitles.resolve``:
a subtitles file if given, else a sidecar ``NAME.srt`` beside the video, else the stream embedded in it).

A question about part of a video (``start``/``end``) uses the whole video's cache entry when there is
one, and a ``.vidtok`` as it is: both are sliced by the planner, nothing is encoded again. A video not
cached yet is encoded for that range only, into its own cache entry (keyed by the range). Frame times
are always seconds from the start of the whole video.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError, VidtokError
from ..core.fileio import Closing
from ..core.options import AskOptions
from ..features.encode import EncodeJob, EncodeOptions, made_for, plan_encode
from ..features.vidtok import Vidtok, content_hash, looks_like_vidtok, open_vidtok
from ..media import subtitles as subs
from ..media import video
from ..model.checkpoint import user_cache_dir
from .planning import Frames, check_range

CACHE_STORAGE = "float16"


@dataclass
class Prepared(Frames, Closing):
    """A video, image or ``.vidtok`` resolved for questions: its timeline (what planning reads) and where its
    features come from (``features``, open, when they exist; else the ``job`` that will encode them)."""

    source: str  # how messages and records name the input (a server: the client's reference)
    path: Path
    timestamps: np.ndarray  # the frames' times, seconds from the start of the whole video
    subtitle_lines: list[subs.SubtitleLine]
    fps: float
    duration: float
    is_image: bool
    features: Vidtok | None = None
    job: EncodeJob | None = None
    # the speech's part in the subtitles: the author's own (1-3 of subtitles.resolve), and whether the
    # transcript is chosen over them (forced) or when they are missing (speech); set when speech was asked for
    own_subtitles: tuple[list, str | None] | None = None
    forced_speech: bool = False
    speech: bool = False
    cache_entry: Path | None = None  # where a video's features are (or will be) kept; None: not cached
    _tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def step(self) -> float:
        """Seconds between sampled frames (1 / the sampling rate)."""
        return 1.0 / float(self.fps)


    def close(self) -> None:
        if self.features is not None:
            self.features.close()
            self.features = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def cache_path_for(source_hash: str, encoder_fingerprint: str, fps: float,
                   time_range: tuple[float, float] | None = None, speech_key: str | None = None) -> Path:
    """Where the features of a video (or of the part ``time_range`` of it; with a transcript of its speech
    made as ``speech_key`` says) live in the user cache."""
    key = f"{source_hash.split(':')[-1][:24]}-{encoder_fingerprint.split(':')[-1][:12]}-fps{fps:g}"
    if speech_key is not None:
        key += "-asr" + hashlib.sha256(speech_key.encode()).hexdigest()[:10]
    if time_range is not None:
        start, end = time_range
        key += f"-from{start:g}" + ("" if end == float("inf") else f"-to{end:g}")
    return user_cache_dir() / "vidtok" / f"{key}.vidtok"


def input_key(source, options: AskOptions) -> tuple:
    """What ``prepare`` reads of a question: questions with equal keys share one prepared input (a batch's
    questions about one video, a server's concurrent requests). ``source``: a path, or any hashable that
    names the media (a server's file identity)."""
    source = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    return (source, options.fps, options.subtitles, options.cache, options.time_range)


def video_duration(features: Vidtok) -> float:
    """A token file's video length: the probed duration, else its last frame's time plus one step."""
    duration = features.source.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
        return float(duration)
    stamps = features.timestamps
    return float(stamps[-1]) + 1.0 / float(features.fps) if len(stamps) else 0.0


def check_file(path: Path, label: str | None = None) -> None:
    """The input is a regular, non-empty file (a one-line error naming it otherwise)."""
    label = os.fspath(path) if label is None else label
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError("no such file", where=label) from None
    except OSError as exc:  # a name too long, a loop of links...
        raise InputError(exc.strerror or str(exc), where=label) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory", where=label)
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file (a device, a pipe or a socket)", where=label)
    if st.st_size == 0:
        raise InputError("is empty (0 bytes)", where=label)


def check_source(source: str | os.PathLike) -> None:
    """What can be checked of an input before a model is loaded: a regular, non-empty file that is a
    ``.vidtok`` or a video or image whose header can be read (``video.check_readable``)."""
    path = Path(source)
    check_file(path)
    if path.suffix.lower() == ".vidtok" or looks_like_vidtok(path):
        return
    video.check_readable(path)


def prepare(model, source: str | os.PathLike, options: AskOptions = AskOptions(), *,
            callbacks: Callbacks = NO_CALLBACKS, label: str | None = None) -> Prepared:
    """A video, image or .vidtok resolved for this model's questions, before any decoding (see the module
    docstring). ``label``: how messages name the input (default: the path as given)."""
    path = Path(source)
    label = os.fspath(source) if label is None else label
    check_file(path, label)
    fingerprint = model.vision_identity()["fingerprint"]
    explicit = options.subtitles
    speech = speech_options(options)  # a recognizer that cannot be had is refused here, before any work
    if path.suffix.lower() == ".vidtok" or looks_like_vidtok(path):
        features = open_vidtok(path)
        try:
            features.check_encoder(fingerprint)
            if speech is not None and features.transcript is None:
                callbacks.warn(f"{label}: holds no transcript of its speech (encode the video with asr to make one)")
            lines, _ = subs.resolve(None, explicit, stored=_stored(features), transcript=_transcript(features),
                                    speech=options.speech, on_warning=callbacks.warning)
            return _from_features(label, path, features, lines, options)
        except BaseException:
            features.close()
            raise

    source_hash = content_hash(path)
    speech_key = speech.key() if speech is not None else None
    if options.cache:
        features, entry, part = _cached(source_hash, fingerprint, options, speech_key)
        if features is not None:
            try:
                lines, _ = subs.resolve(path, explicit, stored=_stored(features), transcript=_transcript(features),
                                        speech=options.speech, on_warning=callbacks.warning)
                return _from_features(label, path, features, lines, options, entry)
            except BaseException:
                features.close()
                raise
        tmpdir = None
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="llamavid-")
        entry, part = Path(tmpdir.name) / (path.stem + ".vidtok"), options.time_range
    try:
        info = video.probe(path)
        check_range(label, options.time_range, duration=info.duration, is_image=info.is_image)
        forced = explicit == subs.SPEECH
        own = ([], None) if info.is_image else subs.own_subtitles(path, None if forced else explicit,
                                                                   on_warning=callbacks.warning)
        lines, _ = subs.choose(own, None, forced=forced, speech=options.speech)  # a transcript is still to come
        job = plan_encode(path, entry, EncodeOptions(fps=options.fps, subtitles=options.subtitles,
                                                     storage=CACHE_STORAGE, time_range=part,
                                                     asr=None if info.is_image else speech),
                          fingerprint=fingerprint, info=info, source_hash=source_hash, subtitles=own)
    except BaseException:
        if tmpdir is not None:
            tmpdir.cleanup()
        raise
    return Prepared(label, path, job.timestamps, list(lines), options.fps, info.duration, info.is_image, job=job,
                    cache_entry=entry if options.cache else None, _tmpdir=tmpdir, own_subtitles=own,
                    forced_speech=forced, speech=options.speech)


@contextmanager
def prepared(model, video, options: AskOptions = AskOptions(), *, callbacks: Callbacks = NO_CALLBACKS) -> Iterator:
    """``video`` ready for planning: a path is prepared here (and closed afterwards); an input already
    prepared (``Prepared``) or materialized (``VideoInput``) is used as it is (its owner closes it)."""
    if isinstance(video, (str, os.PathLike)):
        with prepare(model, video, options, callbacks=callbacks) as ready:
            yield ready
    else:
        yield video


def speech_options(options: AskOptions):
    """The speech recognizer's options when the question asks for speech (``AskOptions.speech``), its model
    found (a model that cannot be had offline is refused with the command that fetches it); else None."""
    if not options.speech:
        return None
    from ..media import asr

    return asr.recognizer(options.asr_model, options.language)


def _transcript(features: Vidtok) -> list[subs.SubtitleLine] | None:
    t = features.transcript
    return None if t is None else [subs.SubtitleLine(*line) for line in t["lines"]]


def _stored(features: Vidtok) -> tuple[list[subs.SubtitleLine], str | None]:
    """The subtitles a token file holds and where they came from."""
    return [subs.SubtitleLine(*line) for line in features.subtitles], features.source.get("subtitles")


def _from_features(label: str, path: Path, features: Vidtok, lines: list[subs.SubtitleLine], options: AskOptions,
                   entry: Path | None = None) -> Prepared:
    is_image = bool(features.source.get("is_image"))
    duration = video_duration(features)
    check_range(label, options.time_range, duration=duration, is_image=is_image)
    return Prepared(label, path, features.timestamps, lines, float(features.fps), duration, is_image,
                    features=features, cache_entry=entry)


def _cached(source_hash: str, fingerprint: str, options: AskOptions,
            speech_key: str | None = None) -> tuple[Vidtok | None, Path, tuple | None]:
    """(the cache entry's features when whole and made for this job, the entry, the range to encode if not).

    The whole video's entry serves any range (sliced by the planner); else the entry of the range asked for.
    A damaged entry is not used (materialize encodes it again, with a warning)."""
    entry = cache_path_for(source_hash, fingerprint, options.fps, speech_key=speech_key)
    features = _open_entry(entry, source_hash, fingerprint, options.fps, None, speech_key)
    part = options.time_range
    if features is not None or entry.is_file():
        return features, entry, None  # the whole video is cached (or its damaged entry is about to be redone)
    if part is not None:
        ranged = cache_path_for(source_hash, fingerprint, options.fps, part, speech_key)
        return _open_entry(ranged, source_hash, fingerprint, options.fps, part, speech_key), ranged, part
    return None, entry, None


def _open_entry(entry: Path, source_hash: str, fingerprint: str, fps: float,
                time_range: tuple[float, float] | None, speech_key: str | None = None) -> Vidtok | None:
    """The cache entry, opened and verified, when it is whole and made for this job; else None."""
    if not entry.is_file():
        return None
    try:
        features = open_vidtok(entry)
    except VidtokError:
        return None
    try:
        if made_for(features, source_hash=source_hash, fingerprint=fingerprint, fps=fps, storage=CACHE_STORAGE,
                    time_range=time_range, transcript_key=speech_key):
            features.verify()  # blocks stay verified: answering reads them without hashing again
            return features
    except VidtokError:
        pass
    features.close()
    return None
