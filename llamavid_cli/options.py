"""Every command-line option, declared once (Typer ``Annotated`` aliases) with its help text.

Commands take these as parameter types (``fps: Fps = 1.0``), so an option means and says the same thing
everywhere. Values are validated by the library (``llamavid.core.options.AskOptions`` and friends), once.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer

from llamavid.core.choices import (
    DEFAULT_ASR_MODEL,
    DTYPE_CHOICES,
    KV_CACHE_CHOICES,
    MCQ_MODES,
    QUANTIZE_CHOICES,
    SUMMARY_STYLES,
)
from llamavid.eval.benchmarks import BENCHMARKS

# -- the model ------------------------------------------------------------------------------------------------
Model = Annotated[Optional[str], typer.Option(
    "--model", help="Checkpoint directory, Hugging Face id, or a built-in name (demo). "
                    "Default: $LLAMAVID_MODEL, else YanweiLi/llama-vid-7b-full-224-video-fps-1.")]
Device = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:N or mps (default: the first GPU when there is one, else the CPU).")]
Dtype = Annotated[Optional[str], typer.Option(
    "--dtype", help=f"One of {', '.join(DTYPE_CHOICES)} (auto: bf16 on GPUs, fp16 where bf16 is missing; on the CPU "
                    "bf16 where it computes bf16 natively or float32 would not fit the memory, else float32).")]
Quantize = Annotated[Optional[str], typer.Option(
    "--quantize", help=f"Load the LLM in {' or '.join(QUANTIZE_CHOICES)} through bitsandbytes.")]
KVCache = Annotated[Optional[str], typer.Option(
    "--kv-cache", help=f"How the prompt's keys and values are kept: {', '.join(KV_CACHE_CHOICES)} (auto: "
                       "full precision "
                       "when it fits the memory left, else int8, then int4; offload: host memory, GPUs only).")]
VisionTower = Annotated[Optional[Path], typer.Option(
    "--vision-tower", help="Path to eva_vit_g.pth (default: the config's path, the checkpoint, the embedded "
                           "copy, the cache).")]
QFormerTokenizer = Annotated[Optional[str], typer.Option(
    "--qformer-tokenizer", help="Folder or id of the bert-base-uncased tokenizer (default: "
                                "<checkpoint>/qformer_tokenizer).")]

# -- sampling -------------------------------------------------------------------------------------------------
Temperature = Annotated[Optional[float], typer.Option(
    "--temperature", help="0 is greedy (default 0.2; 0.6 with the long-video prompt).")]
TopP = Annotated[Optional[float], typer.Option(
    "--top-p", help="Nucleus sampling mass in (0, 1] (default 0.7; 0.9 with the long-video prompt).")]
MaxNewTokens = Annotated[Optional[int], typer.Option(
    "--max-new-tokens", help="Answer length limit in tokens (default 512; 1024 with the long-video prompt).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Make sampling repeatable.")]

# -- frames and prompt ----------------------------------------------------------------------------------------
Fps = Annotated[float, typer.Option(
    "--fps", help="Frames per second to sample from a video (published rule: every round(native/fps)-th frame).")]
MaxFrames = Annotated[Optional[int], typer.Option(
    "--max-frames", help="Use at most N frames, spread evenly over the video.")]
Subtitles = Annotated[Optional[Path], typer.Option(
    "--subtitles", help="An .srt file for the video, or 'speech' (the transcript of its speech, whatever else it has) "
                        "or 'none' (default: NAME.srt beside it, else a stream inside it; with --asr, else the "
                        "transcript).")]
Asr = Annotated[bool, typer.Option(
    "--asr", help="Transcribe the video's speech (faster-whisper, voice detection on): its subtitles when it has "
                  "none of its own. Kept with the features, so it is made once.")]
AsrModel = Annotated[Optional[str], typer.Option(
    "--asr-model", help=f"The speech recognizer: a size (tiny, base, small, large-v3, ...), a Hugging Face id or a "
                        f"local CTranslate2 folder (default {DEFAULT_ASR_MODEL}).")]
WriteSrt = Annotated[bool, typer.Option(
    "--write-srt", help="Also write the transcript beside each video as NAME.srt, in whisper's format (never over "
                        "an existing file without --force).")]
Language = Annotated[Optional[str], typer.Option(
    "--language", help="The language spoken, as a code (en, de, fr, ...; default: detected).")]
Long = Annotated[Optional[bool], typer.Option(
    "--long/--short", help="The long-video (movie) prompt with per-frame subtitles, or the short one (default: as the "
                           "model was trained).")]
StrictContext = Annotated[bool, typer.Option(
    "--strict-context", help="Refuse when the frames do not fit the context, instead of using the most "
                             "frames that fit.")]
NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Do not keep the video's features in the cache (encode into a temporary file).")]
Style = Annotated[str, typer.Option("--style", help=f"Summary style: {', '.join(SUMMARY_STYLES)}.")]
Start = Annotated[Optional[str], typer.Option(
    "--start", help="Use the video from this time on: seconds or [HH:]MM:SS. Times in answers stay those of the "
                    "whole video.")]
End = Annotated[Optional[str], typer.Option(
    "--end", help="Use the video up to this time (exclusive): seconds or [HH:]MM:SS.")]

LookCloser = Annotated[Optional[bool], typer.Option(
    "--look-closer/--no-look-closer",
    help="Answer in two passes: score every frame's relevance to the question, then answer from the best ranges "
         "at more detail (more frames per second, key frames with more tokens). Default: on when the video's "
         "frames do not fit the context. --json lists the ranges looked at (\"looked_at\").")]

# -- what the answer carries ----------------------------------------------------------------------------------
Evidence = Annotated[bool, typer.Option(
    "--evidence", help="Also give the time ranges the answer rests on, best first "
                       "(a line 'evidence: 00:24-00:30 (0.82), ...' after the answer; \"evidence\" in --json).")]
Choice = Annotated[Optional[List[str]], typer.Option(
    "--choice", help="An allowed answer (repeat for each option): the answer is the option the model finds "
                     "likeliest (length-normalised log-likelihood); --json gives every option's score.")]
Chapters = Annotated[bool, typer.Option(
    "--chapters", help="Chapters instead of one summary: boundaries where the video's features change, a title "
                       "and a summary for each; prints '00:00 Title' lines (--json: {\"chapters\": [...]}).")]

# -- output ---------------------------------------------------------------------------------------------------
Json = Annotated[bool, typer.Option("--json",
                                    help="Machine-readable output on stdout (JSON; JSONL for several records).")]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace an output that holds something else (encode: also encode again an up-to-date output, "
                    "or one made by another vision encoder).")]
Verify = Annotated[bool, typer.Option("--verify", help="For a .vidtok: check every block's checksum.")]
Mcq = Annotated[str, typer.Option(
    "--mcq", help=f"Multiple-choice items: {' or '.join(MCQ_MODES)}. generate: ask with the options listed and read "
                  "the letter from the reply; likelihood: score each option as the answer (as ask --choice does).")]
QuestionsPerBatch = Annotated[int, typer.Option(
    "--batch-size", help="Questions about one video answered together (one pass through the model).")]
FramesPerBatch = Annotated[Optional[int], typer.Option(
    "--frames-per-batch", help="Frames per vision-encoder forward (default 32 on a GPU, 8 on the CPU).")]
OldBatchSize = Annotated[Optional[int], typer.Option(
    "--batch-size", hidden=True, help="Deprecated name of --frames-per-batch (encode) / --global-batch-size (train).")]
Compact = Annotated[bool, typer.Option("--compact", help="Store int8 features with per-token scales (half the size).")]


# -- search ---------------------------------------------------------------------------------------------------
Top = Annotated[int, typer.Option("--top", help="How many moments to return, best first.")]
Closer = Annotated[int, typer.Option(
    "--closer", help="How many of the first stage's best moments get their visual score again from every stored "
                     "frame at full resolution, not the index's coarse summary; 0: none.")]
Rerank = Annotated[Optional[int], typer.Option(
    "--rerank", help="How many of the first stage's best moments the model checks (\"Does this part show ...?\"); "
                     "0: none (default: twice --top, at least 10).")]
AnswerMoments = Annotated[bool, typer.Option(
    "--answer", help="Also ask the query as a question on each moment returned (the answer follows its line; "
                     "\"answer\" in --json).")]


# -- benchmarks and the judge (llamavid eval) ------------------------------------------------------------
BENCHMARK_NAMES = ", ".join(BENCHMARKS)

Benchmark = Annotated[str, typer.Argument(help=f"Benchmark name: {BENCHMARK_NAMES}.")]
Questions = Annotated[List[Path], typer.Option(
    "--questions", "-q", help="The benchmark's question file (repeat for benchmarks with several files, e.g. "
                              "ActivityNet-QA's test_q.json and test_a.json, or MVBench tasks).")]
Answers = Annotated[Optional[Path], typer.Option(
    "--answers", help="A separate answers file (ActivityNet-QA's test_a.json, EgoSchema's subset_answers.json).")]
Videos = Annotated[Optional[Path], typer.Option(
    "--videos", help="Folder holding the benchmark's videos (names from the file, trying .mp4 .mkv .avi .mov .webm).")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="Only the first N items (a quick trial run).")]
BaseUrl = Annotated[Optional[str], typer.Option(
    "--base-url", help="Judge: OpenAI-compatible API base (.../v1); default $LLAMAVID_JUDGE_BASE_URL, "
                       "$OPENAI_BASE_URL, then OpenAI.")]
JudgeModel = Annotated[Optional[str], typer.Option(
    "--judge-model", help="Judge model; default $LLAMAVID_JUDGE_MODEL, else gpt-3.5-turbo (as published).")]
ApiKey = Annotated[Optional[str], typer.Option(
    "--api-key", help="Judge bearer token; default $LLAMAVID_JUDGE_API_KEY, then $OPENAI_API_KEY (none: no header).")]
Workers = Annotated[int, typer.Option("--workers", help="Judge requests in parallel.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for one judge reply.")]
MaxRetries = Annotated[int, typer.Option("--max-retries",
                                         help="Judge retries after timeouts, 429 and 5xx (exponential backoff).")]


# ---------------------------------------------------------------------------------------------------------
# Option groups: a command declares `model: ModelChoice` or `options: AskOptions` and receives one object
# built from the group's options, which are added to its command line (declared above, once).


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load, and how (the --model/--device/--dtype/--quantize/... group)."""

    model: Optional[str] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    quantize: Optional[str] = None
    vision_tower: Optional[Path] = None
    qformer_tokenizer: Optional[str] = None

    def __post_init__(self) -> None:
        """What can be checked before loading is checked here, when the command line is read: the device
        exists, the dtype runs on it, the quantization is one we know."""
        from llamavid.model.devices import check_device_dtype
        from llamavid.model.quantize import parse_quantize

        parse_quantize(self.quantize)
        check_device_dtype(self.device, self.dtype)

    def load(self):
        from .common import load

        return load(self.model, vision_tower=self.vision_tower, qformer_tokenizer=self.qformer_tokenizer,
                    device=self.device, dtype=self.dtype, quantize=self.quantize)


@dataclass(frozen=True)
class Group:
    """Options that travel together; ``build`` turns their values into the one object the command gets."""

    parameter: str
    options: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]

    def without(self, *names: str) -> "Group":
        return Group(self.parameter, tuple(p for p in self.options if p.name not in names), self.build)


def _options(**declared: tuple[Any, Any]) -> tuple[inspect.Parameter, ...]:
    return tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, (annotation, default) in declared.items())


def _ask_options(**values: Any):
    from .common import ask_options

    return ask_options(**values)


MODEL = Group("model", _options(model=(Model, None), device=(Device, None), dtype=(Dtype, None),
                                quantize=(Quantize, None), vision_tower=(VisionTower, None),
                                qformer_tokenizer=(QFormerTokenizer, None)), lambda **v: ModelChoice(**v))
QUESTION = Group("options", _options(
    temperature=(Temperature, None), top_p=(TopP, None), max_new_tokens=(MaxNewTokens, None), seed=(Seed, None),
    fps=(Fps, 1.0), max_frames=(MaxFrames, None), subtitles=(Subtitles, None), long=(Long, None),
    strict_context=(StrictContext, False), no_cache=(NoCache, False), start=(Start, None), end=(End, None),
    evidence=(Evidence, False), choices=(Choice, None), kv_cache=(KVCache, None), asr=(Asr, False),
    asr_model=(AsrModel, None), language=(Language, None), look_closer=(LookCloser, None)), _ask_options)


@dataclass(frozen=True)
class BenchmarkFiles:
    """A benchmark's files and how much of it to run (the --questions/--answers/--videos/--limit group)."""

    questions: tuple[Path, ...] = ()
    answers: Optional[Path] = None
    videos: Optional[Path] = None
    limit: Optional[int] = None


BENCHMARK_FILES = Group("files", _options(questions=(Questions, []), answers=(Answers, None), videos=(Videos, None),
                                          limit=(Limit, None)),
                        lambda questions, **v: BenchmarkFiles(tuple(questions), **v))


def with_groups(*groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add each group's options to a command and hand the command one built object per group.

    The options are validated (built) before the command body runs, so a bad value fails before a
    model is loaded.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name not in {g.parameter for g in groups}]
        params = own + [p for g in groups for p in g.options]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for g in groups:
                kwargs[g.parameter] = g.build(**{p.name: kwargs.pop(p.name) for p in g.options})
            return command(**kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # Typer must see the new signature, not the command's
        return wrapper

    return decorate
