"""The encoding pipeline: video -> frames -> vision features -> .vidtok, once per video.

- Memory is bounded: frames are decoded in small chunks and shrunk to 224 px at once; features go to
  disk chunk by chunk. Nothing grows with the length of the video.
- Decoding overlaps the vision forward: a background thread decodes and preprocesses the next batch
  while the encoder runs on the current one (decoders and PIL release the GIL).
- Resumable: the token file's writer keeps fixed-size chunks durably on disk; a run stopped by Ctrl-C,
  kill -9 or power loss continues after the last complete chunk, and batches stay aligned to chunk
  boundaries, so the features equal those of an uninterrupted run bit for bit. The resume point is found
  from the last stored TIMESTAMP, not from the number of stored frames: when frames failed to decode
  (a damaged stretch), stored frames and positions in the sampling plan differ, and counting would
  re-encode (duplicate) frames.
"""

from __future__ import annotations

import bisect
import os
import queue
import stat
import sys
import threading
import time
import warnings
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..core import locking
from ..core.errors import InputError, LlamaVidError, Opt, OptionError, VideoError, VidtokError
from ..core.options import check_choice, check_fps, check_subtitles, check_whole
from ..media import subtitles as subs
from ..media import video
from ..media.asr import AsrOptions
from ..media.video import frames_in_range
from ..model.vision import VisionEncoder, preprocess_frames
from .vidtok import Vidtok, VidtokWriter, check_destination, content_hash, looks_like_vidtok, open_vidtok

CHUNK_FRAMES = 64  # the token file's resume unit; batch sizes divide it


STORAGES = ("float16", "int8")


@dataclass
class EncodeOptions:
    """What an encode may set, validated once here (the CLI and the library rely on it); an output is up to
    date only for the same source, encoder, fps, storage and range."""

    fps: float = 1.0
    storage: str = "float16"  # or "int8" (compact)
    frames_per_batch: int | None = None  # frames per vision forward; None: 32 on a GPU, 8 on the CPU
    subtitles: str | os.PathLike | None = None
    force: bool = False
    verify: bool = True  # check every block of an existing output before calling it up to date
    time_range: tuple[float, float] | None = None  # only frames at start <= t < end (seconds; end may be inf)
    asr: AsrOptions | None = None  # also transcribe the speech, kept in the file with how it was made
    batch_size: InitVar[int | None] = None  # deprecated name of frames_per_batch

    def __post_init__(self, batch_size: int | None) -> None:
        if batch_size is not None:
            warnings.warn("EncodeOptions(batch_size=...) is deprecated: use frames_per_batch", DeprecationWarning,
                          stacklevel=3)
            self.frames_per_batch = batch_size if self.frames_per_batch is None else self.frames_per_batch
        self.fps = check_fps(self.fps)
        self.storage = check_choice("storage", self.storage, STORAGES)
        if self.subtitles is not None:
            self.subtitles = check_subtitles(self.subtitles, keywords=True)
        if self.asr is not None and not isinstance(self.asr, AsrOptions):
            raise OptionError("asr", self.asr, "must be the speech recognizer's options (AsrOptions) or None")
        if self.frames_per_batch is not None:
            self.frames_per_batch = check_whole("frames_per_batch", self.frames_per_batch, low=1)
        if self.time_range is not None:
            start, end = self.time_range
            if not (0 <= start < end):
                raise OptionError("time_range", list(self.time_range), "must be (start, end) with 0 <= start < end")


@dataclass
class EncodeResult:
    """One record per input (printed as JSON by ``llamavid encode --json``)."""

    input: str
    output: str | None
    status: str  # "encoded", "resumed", "skipped" (up to date) or "failed"
    frames: int = 0
    seconds: float = 0.0
    backend: str | None = None
    resumed_from: int = 0
    subtitles: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def default_batch_size(device: torch.device) -> int:
    return 32 if device.type == "cuda" else 8


def batch_size_for(requested: int | None, device: torch.device) -> int:
    """A batch size that divides the chunk size, so resumed runs batch frames exactly as fresh ones."""
    size = requested or default_batch_size(device)
    size = min(size, CHUNK_FRAMES)
    while CHUNK_FRAMES % size:
        size -= 1
    return size


def output_is_folder(out: Path | None, inputs: int) -> bool:
    """Whether ``-o`` names a folder: an existing folder, or a new name without the ``.vidtok`` suffix (or
    several inputs). An existing file is a file target: the guard of ``run_encode`` decides whether it may
    be replaced."""
    if out is None:
        return False
    if out.is_dir():
        return True
    if out.exists() or out.is_symlink():
        if inputs > 1:
            raise InputError("is a file, but several inputs need an output folder", where=out)
        return False
    if inputs > 1 and out.suffix == ".vidtok":
        raise InputError("several inputs need an output directory, not one .vidtok file", where=out)
    return inputs > 1 or out.suffix != ".vidtok"


def output_path_for(input_path: Path, out: Path | None, *, many: bool) -> Path:
    """Where an input's token file goes: beside it (no ``out``), ``DIR/NAME.vidtok`` (``many``: ``out`` is a
    folder, ``output_is_folder``), or ``out`` itself."""
    name = input_path.stem + ".vidtok"
    if out is None:
        return input_path.with_name(name)
    if many:
        if out.suffix == ".vidtok" and not out.is_dir():
            raise InputError("several inputs need an output directory, not one .vidtok file", where=out)
        return out / name
    return out


def guard_output(output: Path, source: Path, *, force: bool) -> None:
    """Never destroy what the encode was not asked to: the input itself (never, even with ``force``), a
    device or anything else that is not a regular file (never), a symbolic link (``force`` replaces the
    link, not what it points to), or a file that is not a ``.vidtok`` (``force`` replaces it)."""
    if not (output.exists() or output.is_symlink()):
        return
    from ..core.fileio import same_file

    if same_file(output, source):
        raise InputError("is the input being encoded; give another output", where=output)
    if output.is_symlink() and not force:
        raise InputError("is a symbolic link; give another output, or add ", Opt("force"),
                         " to replace the link (not what it points to)", where=output)
    if output.exists() and not output.is_symlink() and not stat.S_ISREG(output.stat().st_mode):
        raise InputError("is not a regular file (a device, a pipe or a socket); give a .vidtok path", where=output)
    if not force and output.is_file() and not output.is_symlink() and not looks_like_vidtok(output):
        raise InputError("already exists and is not a .vidtok; give another output, or add ", Opt("force"),
                         " to replace it", where=output)


@dataclass(frozen=True)
class OutputState:
    """What an existing output is worth to a job (see ``check_output``)."""

    status: str  # "missing", "current" (up to date), "stale" (another job's output) or "damaged"
    frames: int = 0
    fingerprint: str | None = None  # the vision encoder that made it (None when missing or damaged)
    problem: str | None = None  # for "damaged": the reader's one-line error


def range_record(time_range: tuple[float, float] | None) -> list[float | None] | None:
    """How a time range is stored in a token file's source description (JSON has no infinity)."""
    if time_range is None:
        return None
    start, end = time_range
    return [float(start), None if end == float("inf") else float(end)]


def made_for(vt: Vidtok, *, source_hash: str, fingerprint: str, fps: float, storage: str,
             time_range: tuple[float, float] | None = None, transcript_key: str | None = None) -> bool:
    """Whether a token file holds the features of this job: the same source bytes, vision encoder, frame
    rate, storage and time range (None: the whole video), and, when the job transcribes the speech
    (``transcript_key``: ``AsrOptions.key()``), a transcript made that way. The one rule for "this .vidtok is
    ours" (outputs and cache entries alike); its blocks' checksums are checked apart (``Vidtok.verify``)."""
    return (vt.source.get("content_hash") == source_hash and vt.encoder.get("fingerprint") == fingerprint
            and abs(float(vt.fps) - float(fps)) < 1e-9 and vt.storage == storage
            and vt.source.get("range") == range_record(time_range)
            and (transcript_key is None or (vt.transcript or {}).get("key") == transcript_key))


def check_output(output: Path, source_hash: str, encoder: dict, fps: float, storage: str, *,
                 verify: bool = True, time_range: tuple[float, float] | None = None,
                 transcript_key: str | None = None) -> OutputState:
    """Classify an existing token file for a job: missing, current, stale, or damaged.

    The job is the source's bytes, the encoder, the frame rate, the storage and the time range (None:
    the whole video); a file made for another range is "stale".

    ``verify=True`` checks every block's checksum of a file that otherwise matches the job, so a file
    that fails its checksums is never "current". That costs one read of the whole file, as
    ``llamavid info --verify`` does (the features at disk speed plus BLAKE2b on one core; measured
    0.25-0.3 GB/s from the page cache on a busy 2-core machine, so about 10 s for an hour of video at 1
    frame/s, 2.6 GB); ``verify=False`` checks the header, the layout and the timestamps only and leaves
    the blocks to be checked when they are read.
    """
    if not output.is_file():
        return OutputState("missing")
    try:
        with open_vidtok(output) as vt:
            fingerprint = vt.encoder.get("fingerprint")
            same = made_for(vt, source_hash=source_hash, fingerprint=encoder["fingerprint"], fps=fps, storage=storage,
                            time_range=time_range, transcript_key=transcript_key)
            if same and verify:
                vt.verify()
            return OutputState("current" if same else "stale", vt.num_frames, fingerprint)
    except LlamaVidError as e:
        return OutputState("damaged", problem=str(e))


def is_up_to_date(output: Path, source_hash: str, encoder: dict, fps: float, storage: str, *,
                  verify: bool = True, time_range: tuple[float, float] | None = None) -> bool:
    """A complete token file from the same source bytes, encoder, frame rate, storage and range exists.

    With ``verify`` (the default) every block's checksum is checked as well (one read of the file): a
    file that fails its checksums is never up to date. See ``check_output``.
    """
    return check_output(Path(output), source_hash, encoder, fps, storage, verify=verify,
                        time_range=time_range).status == "current"


def shard_inputs(items: list, rank: int, world: int) -> list:
    """The inputs process ``rank`` of ``world`` encodes: every world-th one from ``rank`` (round robin).

    Every process expands the same inputs in the same (sorted) order, so the shards are disjoint and
    together cover all inputs without any communication between processes.
    """
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"process rank {rank} of {world}: the rank must be in [0, world size)")
    return items[rank::world]


def shard_from_env(environ: dict | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) as ``accelerate launch`` / torchrun set them; (0, 1, 0) otherwise.

    Read from the environment rather than through a process group: encoding needs no communication, and
    a plain single process must not try to join one.
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", env.get("ACCELERATE_PROCESS_INDEX", "0")))
        local = int(env.get("LOCAL_RANK", env.get("ACCELERATE_LOCAL_PROCESS_INDEX", str(rank))))
    except ValueError:
        raise InputError("WORLD_SIZE / RANK / LOCAL_RANK must be integers") from None
    return rank, world, local


def last_stored_timestamp(writer: VidtokWriter) -> float | None:
    """Timestamp of the last frame in the writer's durable chunks (None when there are none or unreadable)."""
    from safetensors import safe_open

    if not writer.frames_done:
        return None
    last = writer.partial_dir / f"chunk-{writer.frames_done // CHUNK_FRAMES - 1:06d}.safetensors"
    try:
        with safe_open(last, framework="numpy") as f:
            return float(f.get_tensor("timestamps")[-1])
    except Exception:  # noqa: BLE001 - the caller starts over instead
        return None


def resume_position(plan_times: list[float], last_timestamp: float) -> int:
    """Position in the sampling plan after the frame stored last (plan times strictly increase)."""
    return bisect.bisect_right(plan_times, last_timestamp + 1e-9)


def _batches(path: Path, info: video.VideoInfo, plan: Sequence[tuple[int, float]], start: int, batch: int,
             image_size: int, warnings: list[str],
             stop: int | None = None) -> Iterator[tuple[torch.Tensor, list[float]]]:
    """(pixels, timestamps) batches of exactly ``batch`` frames (the last may be shorter), from frame
    ``start`` up to ``stop`` (positions in the sampling plan)."""
    pending: list[torch.Tensor] = []
    times: list[float] = []
    for chunk in video.sample_frames(path, chunk_size=min(batch, 16), start=start, stop=stop,
                                     on_warning=warnings.append, info=info, plan=plan):
        pending.append(preprocess_frames(chunk.frames, image_size, pad_to_square=info.is_image))
        times.extend(chunk.timestamps)
        while sum(p.shape[0] for p in pending) >= batch:
            pixels = torch.cat(pending)
            yield pixels[:batch], times[:batch]
            pending, times = ([pixels[batch:]] if pixels.shape[0] > batch else []), times[batch:]
    if pending:
        yield torch.cat(pending), times


def _prefetch(iterator: Iterator, depth: int = 2, pin: bool = False) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead; exceptions are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    return
                if pin:
                    item = (item[0].pin_memory(), item[1])
                q.put(item)
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # ends a decoder subprocess at once when the consumer stopped early

    thread = threading.Thread(target=work, daemon=True, name="llamavid-decode")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


@dataclass(frozen=True)
class EncodeJob:
    """One video's encode, resolved before any decoding: the source, the output, the sampling plan and the
    part of it to encode, and (when the caller resolved them) the subtitles to store. The encoder takes
    the job as it is: nothing here is computed again."""

    source: Path
    output: Path
    options: EncodeOptions
    info: video.VideoInfo
    source_hash: str
    fingerprint: str  # the vision encoder's
    plan: tuple[tuple[int, float], ...]  # the whole sampling plan: (native frame index, time) per sampled frame
    first: int  # the part of the plan to encode: positions [first, stop)
    stop: int
    subtitles: tuple[tuple[subs.SubtitleLine, ...], str | None] | None = None  # (lines, origin); None: resolve

    @property
    def times(self) -> list[float]:
        """Every sampled frame's time (the whole plan)."""
        return [t for _, t in self.plan]

    @property
    def timestamps(self) -> np.ndarray:
        """The frames' times once encoded (frames that fail to decode are left out then)."""
        return np.asarray(self.times[self.first:self.stop], dtype=np.float64)

    def made(self, vt: Vidtok) -> bool:
        """Whether ``vt`` holds this job's features (``made_for``)."""
        o = self.options
        return made_for(vt, source_hash=self.source_hash, fingerprint=self.fingerprint, fps=o.fps, storage=o.storage,
                        time_range=o.time_range, transcript_key=o.asr.key() if o.asr else None)


def plan_encode(input_path: str | os.PathLike, output: str | os.PathLike, opts: EncodeOptions, *, fingerprint: str,
                info: video.VideoInfo | None = None, source_hash: str | None = None,
                subtitles: tuple[list[subs.SubtitleLine], str | None] | None = None) -> EncodeJob:
    """The encode of one video or image, resolved: probe (unless ``info``), content hash (unless
    ``source_hash``), sampling plan, the part ``opts.time_range`` asks for. ``subtitles`` (lines, origin):
    what to store, as the caller resolved them; None: the encoder resolves them, once it knows the output
    is not up to date (``llamavid.media.subtitles.resolve``)."""
    src = Path(input_path)
    if not src.exists():
        raise InputError("no such file", where=src)
    if src.is_dir():
        raise InputError("is a directory (encode takes files; the CLI expands folders)", where=src)
    info = info or video.probe(src)
    if info.is_image and opts.subtitles:
        raise InputError("a still image takes no subtitles", where=src)
    plan = video.sampling_plan(info, opts.fps)
    times = [t for _, t in plan]
    first, stop = 0, len(times)
    if opts.time_range is not None:
        inside = frames_in_range(times, opts.time_range)
        if not inside:
            raise InputError("no sampled frame lies in the range asked for; widen it or raise ", Opt("fps"), where=src)
        first, stop = inside[0], inside[-1] + 1
    return EncodeJob(src, Path(output), opts, info, source_hash or content_hash(src), fingerprint, tuple(plan),
                     first, stop, None if subtitles is None else (tuple(subtitles[0]), subtitles[1]))


def encode_file(
    encoder: VisionEncoder,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    opts: EncodeOptions | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    info: video.VideoInfo | None = None,
    source_hash: str | None = None,
) -> EncodeResult:
    """Encode one video or image into a .vidtok file (skipped when an up-to-date one exists):
    ``plan_encode``, then ``run_encode`` (see both)."""
    t0 = time.perf_counter()
    job = plan_encode(input_path, output, opts or EncodeOptions(), fingerprint=encoder.identity()["fingerprint"],
                      info=info, source_hash=source_hash)
    return run_encode(encoder, job, on_progress=on_progress, on_warning=on_warning, on_wait=on_wait, t0=t0)


def run_encode(encoder: VisionEncoder, job: EncodeJob, *, on_progress: Callable[[int, int], None] | None = None,
               on_warning: Callable[[str], None] | None = None, on_wait: Callable[[str], None] | None = None,
               t0: float | None = None) -> EncodeResult:
    """Encode a planned job (skipped when an up-to-date output exists).

    ``on_progress(done, total)`` is called after every batch. Raises LlamaVidError for bad input; a
    KeyboardInterrupt (or a kill) leaves the partial state on disk for the next run to resume. An
    existing output made with another vision encoder is refused unless ``force``: it may be the only
    copy of hours of encoding, and the two cannot be mixed. An existing output that fails its checksums
    is encoded again, with a warning.

    The whole job (the up-to-date check, resuming, writing, finalizing) runs under
    ``llamavid.core.locking.exclusive(output)``: a second process (or thread) encoding to the same output
    waits, ``on_wait`` (default: ``on_warning``) is told so once, and then it finds the output up to
    date and returns "skipped". The lock is re-entrant, so a caller may hold it already.
    """
    t0 = time.perf_counter() if t0 is None else t0
    identity = encoder.identity()
    if identity["fingerprint"] != job.fingerprint:
        raise ValueError("the job was planned for another vision encoder")
    guard_output(job.output, job.source, force=job.options.force)
    try:
        check_destination(job.output)
    except InputError:
        # Nothing can be written there (so no run can be writing there either); a current output still serves.
        if not job.options.force:
            _, skipped = _output_state(job, identity, t0)
            if skipped is not None:
                return skipped
        raise
    with locking.exclusive(job.output, on_wait=on_wait or on_warning):
        return _encode_locked(encoder, job, identity, t0, on_progress, on_warning)


def _output_state(job: EncodeJob, identity: dict, t0: float) -> tuple[OutputState, EncodeResult | None]:
    """The existing output's state for this job, and the "skipped" result when it is already up to date."""
    o = job.options
    state = check_output(job.output, job.source_hash, identity, o.fps, o.storage, verify=o.verify,
                         time_range=o.time_range, transcript_key=o.asr.key() if o.asr else None)
    if state.status != "current":
        return state, None
    return state, EncodeResult(str(job.source), str(job.output), "skipped", frames=state.frames,
                               backend=job.info.backend, seconds=time.perf_counter() - t0)


def _encode_locked(encoder: VisionEncoder, job: EncodeJob, identity: dict, t0: float,
                   on_progress: Callable[[int, int], None] | None,
                   on_warning: Callable[[str], None] | None) -> EncodeResult:
    """``run_encode`` once it holds the output's lock."""
    src, out, opts, info = job.source, job.output, job.options, job.info
    notes: list[str] = []
    if not opts.force:
        state, skipped = _output_state(job, identity, t0)
        if skipped is not None:
            return skipped
        _refuse_foreign(out, state, identity)
        if state.status == "damaged":
            notes.append(f"{state.problem}; encoding it again")
            if on_warning:
                on_warning(notes[-1])
    if job.subtitles is not None:
        lines, subtitle_source = list(job.subtitles[0]), job.subtitles[1]
    elif info.is_image:
        lines, subtitle_source = [], None
    else:
        # the author's subtitles are stored as they are; a transcript of the speech is stored apart
        own = None if opts.subtitles == subs.SPEECH else opts.subtitles
        lines, subtitle_source = subs.resolve(src, own, on_warning=on_warning)
    plan_times = job.times
    first, stop = job.first, job.stop
    source = {
        "name": src.name, "size": src.stat().st_size, "duration": info.duration, "content_hash": job.source_hash,
        "native_fps": info.native_fps, "width": info.width, "height": info.height, "backend": info.backend,
        "rotation": info.rotation, "is_image": info.is_image, "subtitles": subtitle_source,
    }
    if opts.time_range is not None:
        source["range"] = range_record(opts.time_range)
    make_writer = lambda resume: VidtokWriter(  # noqa: E731
        out, encoder=identity, fps=opts.fps, source=source, storage=opts.storage, chunk_frames=CHUNK_FRAMES,
        resume=resume)
    writer = make_writer(not opts.force)
    start = first
    if writer.frames_done:
        last = last_stored_timestamp(writer)
        if last is None:  # cannot tell where the stored frames end: start over rather than guess
            writer.abort()
            writer = make_writer(False)
        else:
            start = max(first, resume_position(plan_times, last))
    resumed = writer.frames_done
    problems: list[str] = []
    # the speech is transcribed beside the vision forward (a still image has none)
    speech = _Transcription(src, opts.asr) if opts.asr is not None and not info.is_image else None
    batch = batch_size_for(opts.frames_per_batch, encoder.device)
    done = resumed
    planned = max(stop - start + resumed, resumed)
    if on_progress:
        on_progress(done, planned)
    try:
        batches = _batches(src, info, job.plan, start, batch, encoder.image_size, problems, stop=stop)
        for pixels, times in _prefetch(batches, pin=encoder.device.type == "cuda"):
            feats = encoder.encode_pixels(pixels, batch_size=batch)
            writer.append(feats.to("cpu", torch.float32), times)
            done += len(times)
            if on_progress:
                on_progress(done, max(planned, done))
    except BaseException:
        if speech is not None:
            speech.cancel()
        if isinstance(sys.exc_info()[1], LlamaVidError) and not writer.frames_done:
            writer.abort()  # nothing worth resuming: leave no trace
        raise
    transcript = speech.result(problems) if speech is not None else None
    problems = list(dict.fromkeys(problems))  # one warning per problem, in order
    if writer.frames_total == 0:  # the one-line error says it all; no per-frame warnings before it
        writer.abort()
        raise VideoError("no frame could be decoded", where=src)
    if on_warning:
        for w in problems:
            on_warning(w)
    writer.finalize(subtitles=[(s.start, s.end, s.text) for s in lines], warnings=problems, transcript=transcript)
    return EncodeResult(str(src), str(out), "resumed" if resumed else "encoded", frames=done,
                        seconds=time.perf_counter() - t0, backend=info.backend, resumed_from=resumed,
                        subtitles=len(lines), warnings=notes + problems)


class _Transcription:
    """The speech of a video, transcribed in a thread beside the vision forward (measured on a 2-core CPU:
    the two together take 0.83x the time of one after the other; docs/PERFORMANCE.md). The recognizer is
    loaded at once, so a model that cannot be had stops the encode before any frame is encoded."""

    def __init__(self, src: Path, options: AsrOptions):
        from ..media import asr

        self.options = options
        self.transcriber = asr.Transcriber(options)
        self.outcome: list = []
        self.thread = threading.Thread(target=self._run, args=(src,), daemon=True, name="llamavid-asr")
        self.thread.start()

    def _run(self, src: Path) -> None:
        from ..media import asr

        notes: list[str] = []
        try:
            result = self.transcriber.transcribe(src, on_warning=notes.append)
            self.outcome.append((result, notes))
        except asr.NoAudioError as exc:  # a silent film: its features still are encoded; say so once
            self.outcome.append((None, [f"{exc}: the video is encoded without a transcript"]))
        except BaseException as exc:  # noqa: BLE001 - handed to the encoding thread
            self.outcome.append((exc, notes))

    def cancel(self) -> None:
        """An interrupted encode does not wait for the speech (the thread is a daemon; its result is dropped)."""

    def result(self, problems: list[str]) -> dict:
        """The transcript as the file stores it (``vidtok`` ``transcript``); warnings go to ``problems``."""
        self.thread.join()
        [(result, notes)] = self.outcome
        problems.extend(notes)
        if isinstance(result, BaseException):
            raise result
        if result is None:
            provenance = {"engine": "faster-whisper", "model": self.options.model, "audio": None}
            return {"lines": [], "provenance": provenance, "key": self.options.key()}
        return {"lines": [(line.start, line.end, line.text) for line in result.lines],
                "provenance": result.provenance, "key": self.options.key()}


def _refuse_foreign(out: Path, state: OutputState, identity: dict) -> None:
    """An existing complete output made with another vision encoder is not silently replaced."""
    if state.status == "stale" and state.fingerprint != identity["fingerprint"]:
        raise VidtokError(f"already holds features from vision encoder {state.fingerprint}, not "
                          f"{identity['fingerprint']}; use ", Opt("force"), " to replace it, or another ",
                          Opt("output"),
                          where=out)
