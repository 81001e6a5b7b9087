"""Step three of every question's path: *materialize* a prepared input's features.

    prepare (prepare.py) -> plan (planning.py, per question) -> materialize (this module)

Features that exist (a ``.vidtok``, or a cache entry found whole) are handed on as they are. Otherwise the
encode that preparing planned (``EncodeJob``) runs exactly as planned, under the encoder's lock on the
entry (``llamavid.core.locking``), so two processes asking about the same new video encode it once; a
damaged entry is encoded again, with a warning, never used.
"""

from __future__ import annotations

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..features.encode import run_encode
from ..features.vidtok import open_vidtok
from ..media.subtitles import SubtitleLine, choose
from .inputs import VideoInput
from .prepare import Prepared


def materialize(model, prepared: Prepared, *, callbacks: Callbacks = NO_CALLBACKS) -> VideoInput:
    """The prepared input with its features, ready for answering. The ``VideoInput`` takes over what the
    ``Prepared`` held open (its features, its temporary folder): close the input, not the preparation."""
    encoded = False
    if prepared.features is not None:
        features, prepared.features = prepared.features, None
        if prepared.cache_entry is not None:
            callbacks.say(f"using cached features {prepared.cache_entry}")
    else:
        job = prepared.job
        assert job is not None, "a prepared input holds its features or the job that makes them"
        job.output.parent.mkdir(parents=True, exist_ok=True)
        result = run_encode(model.vision_encoder, job, on_progress=callbacks.progress, on_warning=callbacks.warning,
                            on_wait=callbacks.status)
        encoded = result.status != "skipped"
        features = open_vidtok(job.output)
        where = job.output if prepared.cache_entry is not None else "a temporary file"
        callbacks.say(f"encoded {len(features)} frames into {where}" if encoded else f"using cached features {where}")
    lines = list(prepared.subtitle_lines)
    if prepared.own_subtitles is not None:  # the speech was asked for: its transcript is in the features now
        t = features.transcript
        transcript = None if t is None else [SubtitleLine(*line) for line in t["lines"]]
        lines, _ = choose(prepared.own_subtitles, transcript, forced=prepared.forced_speech, speech=prepared.speech)
    tmpdir, prepared._tmpdir = prepared._tmpdir, None
    is_video = prepared.cache_entry is not None or prepared.job is not None
    return VideoInput(prepared.source, features, lines, encoded=encoded, cache_entry=prepared.cache_entry,
                      _tmpdir=tmpdir, video_path=prepared.path if is_video and not prepared.is_image else None)


def materialized(model, video, *, callbacks: Callbacks = NO_CALLBACKS) -> tuple[VideoInput, bool]:
    """(the features of ``video``, whether they are new): a ``Prepared`` input is materialized now (the caller
    closes the ``VideoInput`` it gets), a ``VideoInput`` is handed back as it is."""
    if isinstance(video, VideoInput):
        return video, False
    return materialize(model, video, callbacks=callbacks), True


def timeline_held(planned, vin: VideoInput) -> bool:
    """Whether plans made on ``planned`` hold for ``vin``: the same frames and subtitles (frames that fail to
    decode are left out by encoding, and a transcript of the speech arrives with the features; then every
    question is planned again)."""
    return planned is vin or (np.array_equal(planned.timestamps, vin.timestamps)
                              and list(planned.subtitle_lines) == list(vin.subtitle_lines))


def video_rate(vin: VideoInput) -> float | None:
    """The frame rate of the video the input came from, when the video is at hand (look-closer asks it for
    frames between the stored ones); None for a ``.vidtok`` or an image."""
    if vin.video_path is None or not vin.video_path.is_file():
        return None
    rate = vin.features.source.get("native_fps")
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def materialize_frames(model, vin: VideoInput, times, *, callbacks: Callbacks = NO_CALLBACKS):
    """(times, features) of the video's frames nearest to ``times``, decoded and encoded now, for
    look-closer's pass 2; None when the video or the vision encoder is not at hand or decoding fails
    (pass 2 then uses the stored frames alone)."""
    times = [float(t) for t in times]
    if not times or vin.video_path is None or model.vision_encoder is None:
        return None
    from ..core.errors import LlamaVidError
    from ..media.video import probe, sample_frames

    try:
        info = probe(vin.video_path)
        native = np.asarray(info.frame_times if info.frame_times is not None else [], dtype=np.float64)
        if not len(native):
            return None
        stored = np.asarray(vin.timestamps, dtype=np.float64)
        picked = sorted({int(np.argmin(np.abs(native - t))) for t in times})
        plan = [(i, float(native[i])) for i in picked if np.min(np.abs(stored - native[i])) >= 1e-3]
        if not plan:
            return None
        frames, got = [], []
        for chunk in sample_frames(vin.video_path, info=info, plan=plan, on_warning=callbacks.warning):
            frames.append(chunk.frames)
            got.extend(float(t) for t in chunk.timestamps)
        if not got:
            return None
        pixels = np.concatenate(frames)
        features = model.encode_frames(pixels)
    except (LlamaVidError, OSError) as exc:
        callbacks.warn(f"{vin.source}: could not take more frames from the video ({exc}); using the stored ones")
        return None
    return got, features
