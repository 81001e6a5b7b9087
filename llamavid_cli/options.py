"""Every command-line option, declared once (Typer ``Annotated`` aliases) with its help text.

Commands take these as parameter types (``fps: Fps = 1.0``), so an option means and says the same thing
everywhere. Values are validated by the library (``llamavid.options.AskOptions`` and friends), once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from llamavid.choices import DTYPE_CHOICES, MCQ_MODES, QUANTIZE_CHOICES, SUMMARY_STYLES

# -- the model ------------------------------------------------------------------------------------------------
Model = Annotated[Optional[str], typer.Option(
    "--model", help="Checkpoint directory, Hugging Face id, or a built-in name (demo). "
                    "Default: $LLAMAVID_MODEL, else YanweiLi/llama-vid-7b-full-224-video-fps-1.")]
Device = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:N or mps (default: the first GPU when there is one, else the CPU).")]
Dtype = Annotated[Optional[str], typer.Option(
    "--dtype", help=f"One of {', '.join(DTYPE_CHOICES)} (auto: bf16 on GPUs, fp16 where bf16 is missing, float32 on the CPU).")]
Quantize = Annotated[Optional[str], typer.Option(
    "--quantize", help=f"Load the LLM in {' or '.join(QUANTIZE_CHOICES)} through bitsandbytes.")]
VisionTower = Annotated[Optional[Path], typer.Option(
    "--vision-tower", help="Path to eva_vit_g.pth (default: the config's path, the checkpoint, the cache, the embedded copy).")]
QFormerTokenizer = Annotated[Optional[str], typer.Option(
    "--qformer-tokenizer", help="Folder or id of the bert-base-uncased tokenizer (default: <checkpoint>/qformer_tokenizer).")]

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
    "--subtitles", help="An .srt file for the video (default: NAME.srt beside it, else a stream inside it).")]
Long = Annotated[Optional[bool], typer.Option(
    "--long/--short", help="The long-video (movie) prompt with per-frame subtitles, or the short one (default: as the model was trained).")]
StrictContext = Annotated[bool, typer.Option(
    "--strict-context", help="Refuse when the frames do not fit the context, instead of using the most frames that fit.")]
NoCache = Annotated[bool, typer.Option(
    "--no-cache", help="Do not keep the video's features in the cache (encode into a temporary file).")]
Style = Annotated[str, typer.Option("--style", help=f"Summary style: {', '.join(SUMMARY_STYLES)}.")]
Start = Annotated[Optional[str], typer.Option(
    "--start", help="Use the video from this time on: seconds or [HH:]MM:SS. Times in answers stay those of the whole video.")]
End = Annotated[Optional[str], typer.Option(
    "--end", help="Use the video up to this time (exclusive): seconds or [HH:]MM:SS.")]

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
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (JSON; JSONL for several records).")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an output file that holds something else.")]
Mcq = Annotated[str, typer.Option(
    "--mcq", help=f"Multiple-choice items: {' or '.join(MCQ_MODES)}. generate: ask with the options listed and read "
                  "the letter from the reply; likelihood: score each option as the answer (as ask --choice does).")]
QuestionsPerBatch = Annotated[int, typer.Option(
    "--batch-size", help="Questions about one video answered together (one pass through the model).")]
