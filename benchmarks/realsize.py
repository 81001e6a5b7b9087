"""Real size: the released 7B shapes through the real code, on this machine. Never part of the test suite.

    .venv/bin/python benchmarks/realsize.py                 # writes ~16 GB once under --work, then measures
    .venv/bin/python benchmarks/realsize.py --device cuda --parts load,ask,encode,llm,kv   # on a GPU

What it writes (cached under --work, reused when present; ``--rewrite`` to redo), shard by shard so that
writing never holds more than one shard in memory:
  short/   the released short-video model's layout: config.json (7B LLaMA 32 x 4096, vocab 32000,
           QFormer BERT-base 12 layers with cross-attention every 2nd, the projectors), random bf16 weights in
           ``pytorch_model-0000k-of-0000n.bin`` shards + ``pytorch_model.bin.index.json``, a sentencepiece
           ``tokenizer.model`` trained here (as the test fixture does; fewer ids than 32000, all within the
           embedding), and ``qformer_tokenizer/`` (a 30,522-entry WordPiece vocabulary, + [DEC] = 30,523 ids)
  long/    the long-video model: the same shards (hard links), its config.json (max_token 65536, rope_scaling
           linear 16, compress_type mean_concat, bert_type qformer_pretrain_freeze)
  eva_vit_g.pth  an fp16 EVA ViT-g in the LAVIS layout (40 blocks of width 1408, MLP 6144; 39 are used)

What it measures, each figure in a fresh subprocess (peak = VmHWM of that process; /proc/self/clear_refs
resets it where a phase is measured alone):
  load    load_model with default settings: seconds, peak RSS / weight bytes
  encode  ``llamavid encode`` with default settings on a 16 s clip at 1 frame/s: frames/s and peak
  ask     ``llamavid ask FILE.vidtok`` with default settings: seconds, peak / checkpoint bytes, whether the
          vision encoder was built (it must not be)
  llm     prefill tokens/s (512-token prompt) and decode tokens/s (32 tokens) of the 7B LLM, default dtype
  kv      the long-video config at real width (4096, 32 heads, rope linear 16) but reduced depth (1 and 2
          layers): KV-cache bytes per token and the peak while a long prompt is prefilled in chunks, per
          cache mode; extrapolated to 32 layers per layer (method printed with the figures)
  closer  look-closer's pass 1 at one hour (3,600 frames) against one plain 7B answer, built in memory at real
          width (no files needed: ``--parts closer`` alone writes nothing): the QFormer (BERT-base, 12 layers)
          and token generator (1408 -> 4096) score ``--closer-frames`` frames of random 257 x 1408 features
          (the cost is per frame: scaled to 3,600), against the plain answer's parts measured the same way:
          the tokens of its frames, the 7B LLM's prefill and decode (1 and 2 layers at 4096 wide, per layer x
          32), for the short model (4K context: the 1,900 frames that fit) and the long one (3,600 frames,
          7,300 tokens); and pass 2's parts (its prompt through the LLM, the extra frames through EVA ViT-g)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import describe as describe_machine  # benchmarks/machine.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PUBLISHED_ENCODE_PEAK_MB = 5956  # the published code loading the real-width vision tower (issue 12)
GiB = 2**30

# The released 7B shapes.
LLM = dict(hidden=4096, layers=32, heads=32, inter=11008, vocab=32000)
QF = dict(hidden=768, layers=12, heads=12, inter=3072, vocab=30523, positions=512, queries=32)
EVA = dict(width=1408, blocks=40, mlp=6144, grid=16, patch=14)


# ---------------------------------------------------------------------------------------------------------
# Writing the checkpoint


def _tensor_specs() -> list[tuple[str, tuple[int, ...], str]]:
    """(checkpoint key, shape, init) of every tensor of the released 7B LLaMA-VID (vision tower excluded)."""
    h, inter, v = LLM["hidden"], LLM["inter"], LLM["vocab"]
    specs: list[tuple[str, tuple[int, ...], str]] = [("model.embed_tokens.weight", (v, h), "w")]
    for i in range(LLM["layers"]):
        p = f"model.layers.{i}."
        specs += [(p + f"self_attn.{n}.weight", (h, h), "w") for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        specs += [(p + "mlp.gate_proj.weight", (inter, h), "w"), (p + "mlp.up_proj.weight", (inter, h), "w"),
                  (p + "mlp.down_proj.weight", (h, inter), "w"),
                  (p + "input_layernorm.weight", (h,), "one"), (p + "post_attention_layernorm.weight", (h,), "one")]
    specs += [("model.norm.weight", (h,), "one"), ("lm_head.weight", (v, h), "w")]
    q, qi, w = QF["hidden"], QF["inter"], EVA["width"]
    b = "model.vlm_att_encoder.bert."

    def lin(name: str, out_f: int, in_f: int) -> list:
        return [(name + ".weight", (out_f, in_f), "w"), (name + ".bias", (out_f,), "zero")]

    def ln(name: str, width: int) -> list:
        return [(name + ".weight", (width,), "one"), (name + ".bias", (width,), "zero")]

    specs += [(b + "embeddings.word_embeddings.weight", (QF["vocab"], q), "w"),
              (b + "embeddings.position_embeddings.weight", (QF["positions"], q), "w")] + ln(
                  b + "embeddings.LayerNorm", q)
    for i in range(QF["layers"]):
        p = f"{b}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            specs += lin(p + f"attention.self.{n}", q, q)
        specs += lin(p + "attention.output.dense", q, q) + ln(p + "attention.output.LayerNorm", q)
        if i % 2 == 0:  # cross-attention every 2nd layer
            specs += lin(p + "crossattention.self.query", q, q) + lin(p + "crossattention.self.key", q, w)
            specs += lin(p + "crossattention.self.value", q, w) + lin(p + "crossattention.output.dense", q, q)
            specs += ln(p + "crossattention.output.LayerNorm", q)
        specs += lin(p + "intermediate.dense", qi, q) + lin(p + "output.dense", q, qi) + ln(p + "output.LayerNorm", q)
        specs += lin(p + "intermediate_query.dense", qi, q) + lin(p + "output_query.dense", q, qi)
        specs += ln(p + "output_query.LayerNorm", q)
    specs += [("model.vlm_att_query", (1, QF["queries"], q), "w")] + ln("model.vlm_att_ln", w)
    specs += lin("model.vlm_att_projector", w, q) + lin("model.vlm_att_key_projector", w, w)
    specs += (lin("model.vlm_att_val_projector", h, w) + lin("model.mm_projector.0", h, w)
              + lin("model.mm_projector.2", h, h))
    return specs


def _make(shape: tuple[int, ...], init: str, dtype, gen):
    import torch

    if init == "one":
        return torch.ones(shape, dtype=dtype)
    if init == "zero":
        return torch.zeros(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=gen)


def write_checkpoint(work: Path, *, shard_bytes: int = 4 * GiB) -> tuple[Path, Path]:
    """The short- and long-video checkpoints under ``work`` (written once; long/ hard-links short/'s shards)."""
    import torch
    from checkpoint_fixture import published_config

    short, long = work / "short", work / "long"
    done = short / ".complete"
    if not done.exists():
        if short.exists():
            shutil.rmtree(short)
        short.mkdir(parents=True)
        gen = torch.Generator().manual_seed(0)
        specs = _tensor_specs()
        shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
        size = 0
        for spec in specs:
            n = 2 * int(torch.tensor(spec[1]).prod())
            if size + n > shard_bytes and shards[-1]:
                shards.append([])
                size = 0
            shards[-1].append(spec)
            size += n
        weight_map, total = {}, 0
        for k, part in enumerate(shards):
            name = f"pytorch_model-{k + 1:05d}-of-{len(shards):05d}.bin"
            t0 = time.perf_counter()
            sd = {key: _make(shape, init, torch.bfloat16, gen) for key, shape, init in part}
            torch.save(sd, short / name)
            total += sum(t.numel() * 2 for t in sd.values())
            weight_map.update({key: name for key in sd})
            del sd
            print(f"  wrote {name} ({(short / name).stat().st_size / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s)",
                  flush=True)
        (short / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
        write_llama_tokenizer(short / "tokenizer.model")
        (short / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                                 "bos_token": "<s>",
                                                                 "eos_token": "</s>", "unk_token": "<unk>"}))
        qt = short / "qformer_tokenizer"
        qt.mkdir()
        write_bert_vocab(qt)
        base = dict(hidden_size=LLM["hidden"], intermediate_size=LLM["inter"], num_hidden_layers=LLM["layers"],
                    num_attention_heads=LLM["heads"], num_key_value_heads=LLM["heads"], vocab_size=LLM["vocab"],
                    mm_hidden_size=EVA["width"], torch_dtype="bfloat16", mm_vision_tower="../eva_vit_g.pth")
        (short / "config.json").write_text(json.dumps(published_config(**base), indent=1))
        done.write_text("ok\n")
    if not (long / ".complete").exists():
        if long.exists():
            shutil.rmtree(long)
        long.mkdir()
        for f in short.iterdir():
            if f.name in ("config.json", ".complete"):
                continue
            if f.is_dir():
                shutil.copytree(f, long / f.name)
            else:
                os.link(f, long / f.name)
        cfg = json.loads((short / "config.json").read_text())
        cfg.update({"_name_or_path": "./work_dirs/llama-vid/llama-vid-7b-full-224-long-video",
                    "compress_type": "mean_concat",
                    "bert_type": "qformer_pretrain_freeze", "max_token": 65536,
                    "rope_scaling": {"type": "linear", "factor": 16.0},
                    "image_processor": "./model_zoo/OpenAI/clip-vit-large-patch14"})
        (long / "config.json").write_text(json.dumps(cfg, indent=1))
        (long / ".complete").write_text("ok\n")
    return short, long


def write_llama_tokenizer(path: Path) -> None:
    """A sentencepiece model with LLaMA's 32,000 ids: trained here on the test fixture's corpus, then padded with
    unused pieces, so that every id the random LLM can produce decodes (as with the real tokenizer)."""
    from checkpoint_fixture import train_sentencepiece
    from sentencepiece import sentencepiece_model_pb2 as pb

    train_sentencepiece(path)
    model = pb.ModelProto()
    model.ParseFromString(path.read_bytes())
    for i in range(LLM["vocab"] - len(model.pieces)):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = f"\u2581unused{i}", -1000.0 - i, pb.ModelProto.SentencePiece.NORMAL
    path.write_bytes(model.SerializeToString())


def write_bert_vocab(folder: Path) -> None:
    """A WordPiece vocabulary of bert-base-uncased's size (30,522 entries; the loader adds [DEC])."""
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list("abcdefghijklmnopqrstuvwxyz") + "what who is the of in video movie color happens".split()
    words = list(dict.fromkeys(words))
    words += [f"w{i}" for i in range(QF["vocab"] - 1 - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                              "tokenizer_class": "BertTokenizer"}))


def write_eva(path: Path) -> Path:
    """An fp16 EVA ViT-g in the LAVIS layout of eva_vit_g.pth (40 blocks; the loader uses 39)."""
    import torch

    if path.exists():
        return path
    gen = torch.Generator().manual_seed(1)
    w, m, g, p = EVA["width"], EVA["mlp"], EVA["grid"], EVA["patch"]
    r = lambda *shape, std=0.02: torch.empty(shape, dtype=torch.float16).normal_(0, std, generator=gen)  # noqa: E731
    sd = {"cls_token": r(1, 1, w, std=0.5), "pos_embed": r(1, 1 + g * g, w, std=0.5),
          "patch_embed.proj.weight": r(w, 3, p, p, std=0.05), "patch_embed.proj.bias": r(w)}
    for i in range(EVA["blocks"]):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[b + norm + ".weight"], sd[b + norm + ".bias"] = torch.ones(w, dtype=torch.float16), r(w)
        sd[b + "attn.qkv.weight"], sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = r(3 * w, w), r(w), r(w)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r(w, w), r(w)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r(m, w), r(m)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r(w, m), r(w)
    tmp = path.with_suffix(".partial")
    torch.save(sd, tmp)
    os.replace(tmp, path)
    return path


def make_clip(path: Path, seconds: int) -> Path:
    if not path.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24",
                        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                        str(path)],
                       check=True)
    return path


def dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("pytorch_model-*.bin"))


# ---------------------------------------------------------------------------------------------------------
# Children: each measurement in its own process


def vm(field: str) -> int:
    """A /proc/self/status field in bytes (VmHWM: the peak resident set so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child_load(args: dict) -> dict:
    import llamavid

    notes: list[str] = []
    t0 = time.perf_counter()
    model = llamavid.load_model(args["ckpt"], device=args["device"], callbacks=llamavid.Callbacks(status=notes.append))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak": vm("VmHWM"), "rss": vm("VmRSS"), "dtype": str(model.dtype), "notes": notes}


def _cli(argv: list[str]) -> int:
    from llamavid_cli.main import main

    try:
        main(argv)
        return 0
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1


def child_encode(args: dict) -> dict:
    t0 = time.perf_counter()
    argv = ["encode", args["video"], "--vision-tower", args["tower"], "-o", args["out"], "--force"]
    if args.get("dtype"):
        argv += ["--dtype", args["dtype"]]
    if args["device"] != "cpu":
        argv += ["--device", args["device"]]
    code = _cli(argv)
    seconds = time.perf_counter() - t0
    from llamavid.features.vidtok import open_vidtok

    with open_vidtok(args["out"]) as vt:
        frames = vt.num_frames
    return {"code": code, "seconds": seconds, "frames": frames, "peak": vm("VmHWM")}


def child_ask(args: dict) -> dict:
    import llamavid.model.vision as vision

    built = []
    real = vision.build_vision_tower
    vision.build_vision_tower = lambda *a, **k: built.append(1) or real(*a, **k)
    t0 = time.perf_counter()
    argv = ["ask", args["vidtok"], "What happens in the video?", "--model", args["ckpt"], "--vision-tower",
            args["tower"], "--temperature", "0", "--max-new-tokens", "8", "--json"]
    if args["device"] != "cpu":
        argv += ["--device", args["device"]]
    if args.get("quantize"):
        argv += ["--quantize", args["quantize"]]
    code = _cli(argv)
    return {"code": code, "seconds": time.perf_counter() - t0, "peak": vm("VmHWM"), "vision_built": len(built)}


def _fix_vocab(work: Path) -> None:
    import sentencepiece as spm

    for sub in ("short", "long"):
        tok = work / sub / "tokenizer.model"
        if tok.is_file() and spm.SentencePieceProcessor(model_file=str(tok)).get_piece_size() != LLM["vocab"]:
            tok.unlink()  # a hard link shared with short/: write a new file
            write_llama_tokenizer(tok)
        folder = work / sub / "qformer_tokenizer"
        if folder.is_dir() and len(set((folder / "vocab.txt").read_text().splitlines())) != QF["vocab"] - 1:
            write_bert_vocab(folder)


def child_llm(args: dict) -> dict:
    import torch

    import llamavid
    from llamavid.model.generation import cache_argument
    from llamavid.model.kvcache import make_cache

    model = llamavid.load_model(args["ckpt"], device=args["device"])
    llm, dev = model.llm, model.device
    kw = cache_argument(llm)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randn(1, args["prompt"], llm.config.hidden_size, generator=gen).mul_(0.02).to(dev, model.dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    out = {}
    with torch.inference_mode():
        for run in range(2):  # the first run warms up; the second is reported
            cache = make_cache(llm, "full")
            sync()
            t0 = time.perf_counter()
            res = llm(inputs_embeds=prompt, use_cache=True, logits_to_keep=1, **{kw: cache})
            sync()
            t1 = time.perf_counter()
            tok = res.logits[:, -1].argmax(-1)
            for i in range(args["new"]):
                res = llm(input_ids=tok[:, None], position_ids=torch.tensor([[args["prompt"] + i]], device=dev),
                          use_cache=True, logits_to_keep=1, **{kw: cache})
                tok = res.logits[:, -1].argmax(-1)
            sync()
            t2 = time.perf_counter()
            out = {"prompt": args["prompt"], "new": args["new"],
                   "prefill_tokens_per_s": args["prompt"] / (t1 - t0), "decode_tokens_per_s": args["new"] / (t2 - t1),
                   "prefill_s": t1 - t0, "decode_s": t2 - t1, "dtype": str(model.dtype), "peak": vm("VmHWM")}
            if run == 0 and args.get("quick"):
                break
    return out


def child_kv(args: dict) -> dict:
    """A real-width long-video LLM of ``depth`` layers; peak while a ``tokens`` prompt is prefilled."""
    import torch

    from llamavid.model.config import LlamaVidConfig
    from llamavid.model.generation import PREFILL_CHUNK, cache_argument
    from llamavid.model.kvcache import cache_bytes, make_cache
    from llamavid.model.modeling import finish_llm, new_llm

    raw = json.loads(Path(args["config"]).read_text())
    raw["num_hidden_layers"] = args["depth"]
    cfg = LlamaVidConfig.from_dict(raw)
    dev = torch.device(args["device"])
    dtype = torch.bfloat16
    torch.manual_seed(0)
    llm = new_llm(cfg, device="meta")
    llm = llm.to_empty(device=dev).to(dtype)
    with torch.no_grad():
        for p in llm.parameters():
            p.normal_(0, 0.02)
        for name, p in llm.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
    llm = finish_llm(llm, dev)
    kw = cache_argument(llm)
    tokens, chunk = args["tokens"], args.get("chunk") or PREFILL_CHUNK
    gen = torch.Generator().manual_seed(0)
    cache = make_cache(llm, args["mode"])
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    first = 0
    if args.get("fill"):
        # Fill the cache up to the last chunk with random keys and values (no compute), then prefill only the
        # last chunk: the memory of a chunk attending to the whole prompt, without hours of CPU prefill.
        first = (tokens - 1) // chunk * chunk
        heads = llm.config.num_key_value_heads
        head_dim = llm.config.hidden_size // llm.config.num_attention_heads
        with torch.inference_mode():
            for layer in range(cfg.llm["num_hidden_layers"]):
                for start in range(0, first, chunk):
                    n = min(chunk, first - start)
                    k = torch.randn(1, heads, n, head_dim, generator=gen).to(dev, dtype)
                    cache.update(k, torch.randn(1, heads, n, head_dim, generator=gen).to(dev, dtype), layer)
                    del k
    before_rss = vm("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(first, tokens, chunk):
            end = min(tokens, start + chunk)
            emb = torch.randn(1, end - start, cfg.llm_hidden_size, generator=gen).mul_(0.02).to(dev, dtype)
            mask = torch.ones(1, end, dtype=torch.long, device=dev)
            llm(inputs_embeds=emb, attention_mask=mask, position_ids=torch.arange(start, end, device=dev)[None],
                use_cache=True, logits_to_keep=1, **{kw: cache})
        prefill = time.perf_counter() - t0
        t1 = time.perf_counter()
        tok = torch.zeros(1, 1, dtype=torch.long, device=dev)
        for i in range(args.get("new", 4)):
            mask = torch.ones(1, tokens + i + 1, dtype=torch.long, device=dev)
            llm(input_ids=tok, attention_mask=mask, position_ids=torch.tensor([[tokens + i]], device=dev),
                use_cache=True, logits_to_keep=1, **{kw: cache})
        decode = (time.perf_counter() - t1) / max(1, args.get("new", 4))
    out = {"depth": args["depth"], "tokens": tokens, "mode": args["mode"], "chunk": chunk, "prefill_s": prefill,
           "prefilled_from": first,
           "decode_s_per_token": decode, "cache_bytes": cache_bytes(cache), "rss_before": before_rss,
           "peak": vm("VmHWM"), "weights": sum(p.numel() * p.element_size() for p in llm.parameters())}
    if dev.type == "cuda":
        out["cuda_peak"] = torch.cuda.max_memory_allocated() - before
    return out


# ---------------------------------------------------------------------------------------------------------
# What fits where


SUBTITLE_TOKENS_PER_MINUTE = 150  # assumption: ~115 spoken words a minute averaged over a film, 1.3 tokens a word
PROMPT_TEXT_TOKENS = 100  # system prompt, movie preamble, question
CUDA_CONTEXT = 0.6e9  # CUDA context and allocator slack on a GPU
OS_RESERVE = 1.5e9  # what the OS and the rest of a CPU machine keep


def fits_table(weights: dict[str, float], per_token: dict[str, float], working_per_token: float,
               working_fixed: float) -> str:
    """Markdown: for each video, model, machine: the cheapest setting that fits (or why nothing does)."""
    from llamavid.model.memory import RUNTIME_OVERHEAD

    videos = [("10 min", 10), ("1 hour", 60), ("3 hours", 180)]
    machines = [16e9, 24e9, 48e9, 80e9]
    models = [("short (4K context)", 4096, False), ("long (64K context)", 65536, True)]
    lines = ["| model | video | prompt tokens | " + " | ".join(f"CPU {m / 1e9:.0f} GB" for m in machines) + " | "
             + " | ".join(f"GPU {m / 1e9:.0f} GB" for m in machines) + " |",
             "|---|---|---:|" + "---|" * (2 * len(machines))]
    for label, ctx, long in models:
        for vname, minutes in videos:
            for subs in (False, True) if long else (False,):
                tokens = minutes * 60 * 2 + PROMPT_TEXT_TOKENS + (minutes * SUBTITLE_TOKENS_PER_MINUTE if subs else 0)
                used = min(tokens, ctx - 256)
                shown = f"{used:,}" + (f" (of {tokens:,}: fewer frames)" if used < tokens else "")
                cells = []
                for gpu in (False, True):
                    for mem in machines:
                        room = mem - (CUDA_CONTEXT if gpu else OS_RESERVE) - RUNTIME_OVERHEAD
                        choice = "no"
                        for wname, wbytes in weights.items():
                            for mode in ("full", "int8", "int4"):
                                need = wbytes + per_token[mode] * used + working_per_token * used + working_fixed
                                if need <= room:
                                    choice = (mode if wname == "bf16" else f"{mode} + {wname}") + f" ({need / 1e9:.0f})"
                                    break
                            if choice != "no":
                                break
                        cells.append(choice)
                name = f"{vname}" + (" + subtitles" if subs else "")
                lines.append(f"| {label} | {name} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def random_(module):
    """Random weights in place, as a trained model's are in scale (norms 1, the rest N(0, 0.02))."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name.lower() and p.ndim == 1 else torch.randn_like(p) * 0.02)
    return module


def llm_config(layers: int = 1) -> dict:
    """The released 7B's config.json at ``layers`` layers (costs are per layer)."""
    return {"hidden_size": LLM["hidden"], "intermediate_size": LLM["inter"], "num_hidden_layers": layers,
            "num_attention_heads": LLM["heads"], "num_key_value_heads": LLM["heads"], "vocab_size": LLM["vocab"],
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "mm_hidden_size": EVA["width"],
            "mm_projector_type": "mlp2x_gelu", "compress_type": "mean", "architectures": ["LlavaLlamaAttForCausalLM"],
            "model_type": "llava", "mm_vision_tower": "eva_vit_g.pth", "bert_type": "qformer_pretrain"}


def real_width_model(qtok, dev, dtype):
    """A LLaMA-VID at the released widths with random weights, built in memory: the QFormer (BERT-base, 12
    layers), the token generator 1408 -> 4096, and ONE layer of the 7B LLM (``llm_config``)."""
    from llamavid.model.config import LlamaVidConfig
    from llamavid.model.modeling import LlamaVid, build_modules, finish_llm, new_llm
    from llamavid.model.qformer import QFormerConfig

    qcfg = QFormerConfig(hidden=QF["hidden"], layers=QF["layers"], heads=QF["heads"], intermediate=QF["inter"],
                         encoder_width=EVA["width"], vocab_size=QF["vocab"], max_positions=QF["positions"])
    cfg = LlamaVidConfig.from_dict(llm_config())
    qformer, tokens, _ = build_modules(cfg, qcfg, device="cpu")
    llm = finish_llm(random_(new_llm(cfg, device="meta").to_empty(device=dev)), dev)
    model = LlamaVid(cfg, qformer=random_(qformer), tokens=random_(tokens), llm=llm, qformer_tokenizer=qtok)
    return model.to(dev, dtype).eval()


def child_closer(args: dict) -> dict:
    """Per-frame and per-layer CPU seconds of look-closer's parts and the plain answer's, at real width."""
    import tempfile

    import torch

    from llamavid.model.config import LlamaVidConfig
    from llamavid.model.modeling import finish_llm, new_llm
    from llamavid.model.qformer import load_qformer_tokenizer
    from llamavid.model.vision import EvaVisionTransformer, VisionConfig

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.get("dtype", "bfloat16") == "bfloat16" else torch.float32
    dev = torch.device(args["device"])
    tmp = Path(tempfile.mkdtemp())
    write_bert_vocab(tmp)
    qtok = load_qformer_tokenizer(str(tmp))

    def cpu(fn):
        c0, w0 = time.process_time(), time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.process_time() - c0, time.perf_counter() - w0

    out: dict = {"dtype": str(dtype), "frames_measured": args["frames"]}
    # -- the QFormer and the token generator: pass 1 (scores) and the plain answer's tokens, per frame
    model = real_width_model(qtok, dev, dtype)
    n = args["frames"]
    feats = (torch.randn(n, 1 + EVA["grid"] ** 2, EVA["width"]) * 0.5).to(dtype)
    question = "what color is the ring in the video"
    model.context_relevance(feats[:8], question)  # warm-up
    c, w = cpu(lambda: model.context_relevance(feats, question, chunk_frames=64))
    out["pass1_cpu_per_frame"], out["pass1_wall_per_frame"] = c / n, w / n
    c, w = cpu(lambda: model.video_tokens_batch(feats, [question], chunk_frames=64))
    out["tokens_cpu_per_frame"], out["tokens_wall_per_frame"] = c / n, w / n
    # -- the 7B LLM, per layer: prefill of the plain prompts and of pass 2's, decode per token
    from llamavid.model.generation import cache_argument
    from llamavid.model.kvcache import make_cache

    per_layer: dict = {}
    for depth in (1, 2):
        c2 = LlamaVidConfig.from_dict(llm_config(depth))
        llm = finish_llm(random_(new_llm(c2, device="meta").to_empty(device=dev)), dev).to(dtype)
        kw = cache_argument(llm)
        for tokens_ in args["prompts"]:
            emb = (torch.randn(1, tokens_, LLM["hidden"]) * 0.02).to(dev, dtype)
            cache = make_cache(llm, "full")

            def prefill():
                with torch.inference_mode():
                    for start in range(0, tokens_, 4096):
                        end = min(tokens_, start + 4096)
                        llm(inputs_embeds=emb[:, start:end], position_ids=torch.arange(start, end, device=dev)[None],
                            use_cache=True, logits_to_keep=1, **{kw: cache})

            pc, pw = cpu(prefill)

            def decode():
                with torch.inference_mode():
                    tok = torch.zeros(1, 1, dtype=torch.long, device=dev)
                    for i in range(args["new"]):
                        llm(input_ids=tok, position_ids=torch.tensor([[tokens_ + i]], device=dev), use_cache=True,
                            logits_to_keep=1, **{kw: cache})

            dc, dw = cpu(decode)
            per_layer[f"{depth}:{tokens_}"] = {"prefill_cpu": pc, "prefill_wall": pw, "decode_cpu": dc / args["new"],
                                              "decode_wall": dw / args["new"]}
    out["llm"] = per_layer
    # -- EVA ViT-g: the extra frames pass 2 takes from the video
    vit = EvaVisionTransformer(VisionConfig()).to(dtype)
    random_(vit)
    px = torch.randn(2, 3, 224, 224).to(dtype)
    with torch.inference_mode():
        vit(px[:1])
        c, w = cpu(lambda: vit(px))
    out["eva_cpu_per_frame"], out["eva_wall_per_frame"] = c / 2, w / 2
    return out


CHILDREN = {"load": child_load, "encode": child_encode, "ask": child_ask, "llm": child_llm, "kv": child_kv,
            "closer": child_closer}


def run_child(name: str, args: dict, timeout: float | None = None) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", name, json.dumps(args)], capture_output=True,
                              text=True, timeout=timeout, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    out = json.loads(lines[-1])
    out["wall_s"] = time.perf_counter() - t0
    out["stderr_notes"] = [line for line in proc.stderr.splitlines() if line.startswith("llamavid: ")
                           and "loading" in line]
    return out


# ---------------------------------------------------------------------------------------------------------


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("LLAMAVID_REALSIZE_DIR", "runs/realsize")))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parts", default="load,encode,ask,llm,kv,fits",
                        help="comma-separated: load, encode, ask, ask4bit, llm, kv, fits, closer")
    parser.add_argument("--closer-frames", type=int, default=64, help="frames pass 1 is timed on (closer)")
    parser.add_argument("--kv-tokens", default="16384", help="prompt lengths for the KV measurements")
    parser.add_argument("--kv-long", type=int, default=65536, help="one int4 run at this length, depth 1 (0: skip)")
    parser.add_argument("--kv-modes", default="full,int8,int4")
    parser.add_argument("--kv-compute-all", action="store_true",
                        help="prefill every chunk (default: fill the cache with random keys/values and prefill "
                             "the last chunk)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--figures", type=Path, default=None, help="an earlier --output to build the fits table from")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT / "tests"))
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))), flush=True)
        return

    sys.path.insert(0, str(ROOT / "tests"))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    print(f"machine: {describe_machine()}; device {args.device}; work {work}", flush=True)
    t0 = time.perf_counter()
    if "closer" in parts:
        figures_closer = closer_part(args)
        if parts == {"closer"}:
            if args.output:
                args.output.write_text(json.dumps({"machine": describe_machine(), "closer": figures_closer},
                                                  indent=1) + "\n")
            return
    short, long = write_checkpoint(work)
    _fix_vocab(work)
    tower = write_eva(work / "eva_vit_g.pth")
    ckpt_bytes = dir_bytes(short)
    print(f"checkpoint: {gb(ckpt_bytes)} in {len(list(short.glob('pytorch_model-*.bin')))} shards; eva_vit_g.pth "
          f"{gb(tower.stat().st_size)} (fp16); ready in {time.perf_counter() - t0:.0f} s", flush=True)
    figures: dict = {"machine": describe_machine(), "device": args.device, "checkpoint_bytes": ckpt_bytes,
                     "eva_bytes": tower.stat().st_size}
    dev = args.device

    if "load" in parts:
        r = run_child("load", {"ckpt": str(short), "device": dev}, args.timeout)
        figures["load"] = r
        if "error" not in r:
            print(f"load (defaults): {r['seconds']:.1f} s, dtype {r['dtype']}, peak RSS {gb(r['peak'])} = "
                  f"{r['peak'] / ckpt_bytes:.3f} x the weights ({gb(ckpt_bytes)}); notes: {r['notes']}", flush=True)
        else:
            print(f"load: {r['error']}", flush=True)
    clip = make_clip(work / "clip16.mp4", 16)
    vidtok = work / "clip16.vidtok"
    encodes = [("encode", vidtok, {}, "defaults")]
    if dev == "cpu":  # the float32 path too: the default on CPUs without native bf16 (when it fits)
        encodes.append(("encode_float32", work / "clip16-fp32.vidtok", {"dtype": "float32"}, "--dtype float32"))
    if "encode" in parts or ("ask" in parts and not vidtok.exists()):
        for part, out, extra, label in encodes:
            r = run_child("encode", {"video": str(clip), "tower": str(tower), "out": str(out), "device": dev, **extra},
                          args.timeout)
            figures[part] = r
            print(f"encode ({label}, 16 s clip at 1 frame/s): " + (r["error"] if "error" in r else
                  f"{r['frames']} frames in {r['seconds']:.1f} s ({r['frames'] / r['seconds']:.2f} frames/s "
                  "incl. start-up), "
                  f"peak RSS {r['peak'] / 1e6:,.0f} MB = {r['peak'] / 1e6 / PUBLISHED_ENCODE_PEAK_MB:.3f} x "
                  "the published "
                  f"code's {PUBLISHED_ENCODE_PEAK_MB:,} MB; notes: {r.get('stderr_notes')}"), flush=True)
    for part, extra, label in (("ask", {}, "(defaults)"), ("ask4bit", {"quantize": "4bit"}, "--quantize 4bit")):
        if part not in parts:
            continue
        r = run_child("ask", {"vidtok": str(vidtok), "ckpt": str(short), "tower": str(tower), "device": dev, **extra},
                      args.timeout)
        if "error" not in r and r["code"]:
            r["error"] = f"exit {r['code']}"
        figures[part] = r
        built = f"; vision encoder built {r['vision_built']} times" if "vision_built" in r else ""
        print(f"ask FILE.vidtok {label}: " + (r["error"] if "error" in r else
              f"{r['seconds']:.1f} s, peak RSS {gb(r['peak'])} = {r['peak'] / ckpt_bytes:.3f} x the checkpoint's "
              f"bytes{built}"),
              flush=True)
    if "llm" in parts:
        # CPU: one timed run (a second, warmed-up run doubles minutes of 7B compute for little); GPU: warm-up first
        r = run_child("llm", {"ckpt": str(short), "device": dev, "prompt": 256 if dev == "cpu" else 2048,
                              "new": 16 if dev == "cpu" else 64, "quick": dev == "cpu"}, args.timeout)
        figures["llm"] = r
        if "error" not in r:
            print(f"LLM 7B ({r['dtype']}): prefill {r['prefill_tokens_per_s']:.1f} tokens/s ({r['prompt']} tokens in "
                  f"{r['prefill_s']:.1f} s), decode {r['decode_tokens_per_s']:.2f} tokens/s ({r['new']} tokens in "
                  f"{r['decode_s']:.1f} s), peak RSS {gb(r['peak'])}", flush=True)
        else:
            print(f"llm: {r['error']}", flush=True)
    if "kv" in parts:
        figures["kv"] = kv_part(long, dev, args, ckpt_bytes, figures.get("load", {}))
    if "fits" in parts:
        figures["fits"] = fits_part(args, ckpt_bytes, figures)
    if args.output:
        args.output.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


SHORT_FRAMES = 1900  # a 4K context: 3,840 prompt tokens - text, at 2 tokens a frame
PASS2_TOKENS = 300  # look-closer's pass 2 prompt (the demo's median: 80 frames x 2 + 2 x 16 detail + text)
PASS2_FRAMES, PASS2_EXTRA = 80, 60  # pass 2's frames, of which taken from the video


def closer_part(args) -> dict:
    prompts = [SHORT_FRAMES * 2 + 100, 7300, PASS2_TOKENS]
    r = run_child("closer", {"device": args.device, "frames": args.closer_frames, "prompts": prompts, "new": 4},
                  args.timeout)
    if "error" in r:
        print(f"closer: {r['error']}", flush=True)
        return r

    def llm(tokens: int, key: str) -> float:  # per layer slope (depth 2 - depth 1) x 32 + the rest (depth 1 - slope)
        one, two = r["llm"][f"1:{tokens}"][key], r["llm"][f"2:{tokens}"][key]
        return max(two - one, 0.0) * LLM["layers"] + max(2 * one - two, 0.0)

    new = 8
    out = {"raw": r}
    for name, frames, tokens in (("short 7B (4K context, 1,900 of 3,600 frames)", SHORT_FRAMES, prompts[0]),
                                 ("long 7B (64K context, all 3,600 frames)", 3600, prompts[1])):
        plain = frames * r["tokens_cpu_per_frame"] + llm(tokens, "prefill_cpu") + new * llm(tokens, "decode_cpu")
        pass1 = 3600 * r["pass1_cpu_per_frame"]
        pass2 = (PASS2_FRAMES * r["tokens_cpu_per_frame"] + llm(prompts[2], "prefill_cpu")
                 + new * llm(prompts[2], "decode_cpu"))
        eva = PASS2_EXTRA * r["eva_cpu_per_frame"]
        out[name] = {"plain_cpu_s": plain, "pass1_cpu_s": pass1, "pass2_cpu_s": pass2, "extra_frames_cpu_s": eva}
        print(f"closer, {name}: plain answer {plain:,.0f} CPU s (tokens of {frames} frames "
              f"{frames * r['tokens_cpu_per_frame']:,.0f} s, LLM prefill of {tokens} tokens "
              f"{llm(tokens, 'prefill_cpu'):,.0f} s, {new} new tokens {new * llm(tokens, 'decode_cpu'):,.0f} s); "
              f"pass 1 at 3,600 frames {pass1:,.0f} s = {pass1 / plain:.2f} x the plain answer; pass 2 "
              f"{pass2:,.0f} s, + {PASS2_EXTRA} frames through EVA ViT-g {eva:,.0f} s; look-closer in all "
              f"{(pass1 + pass2) / plain:.2f} x ({(pass1 + pass2 + eva) / plain:.2f} x with the extra frames)",
              flush=True)
    print(f"closer, per frame: pass 1 {r['pass1_cpu_per_frame'] * 1e3:.1f} ms CPU, the frame's tokens "
          f"{r['tokens_cpu_per_frame'] * 1e3:.1f} ms, EVA ViT-g {r['eva_cpu_per_frame']:.2f} s ({r['dtype']}, "
          f"timed on {r['frames_measured']} frames)", flush=True)
    return out


def fits_part(args, ckpt_bytes: int, current: dict | None = None) -> str:
    """The "what fits where" table from the measured KV figures: this run's, or an earlier --output (--figures)."""
    import torch

    from llamavid.model.kvcache import CacheShape
    from llamavid.model.loading import QUANTIZED_BYTES_PER_WEIGHT

    measured = json.loads(Path(args.figures).read_text()) if args.figures else (current or {})
    shape = CacheShape(layers=32, kv_heads=32, head_dim=128, dtype=torch.bfloat16, hidden=4096, intermediate=11008)
    per_token = {m: shape.bytes_per_token(m) for m in ("full", "int8", "int4")}
    source = "computed"
    for mode in per_token:
        hit = measured.get("kv", {}).get("extrapolated", {}).get(f"{mode}/65536")
        if hit:
            per_token[mode], source = hit["per_token"], "measured (per layer) x 32"
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # decoder-layer Linear weights, the ones --quantize shrinks
    weights = {"bf16": float(ckpt_bytes),
               "--quantize 8bit": ckpt_bytes - 2 * linear + QUANTIZED_BYTES_PER_WEIGHT[8] * linear,
               "--quantize 4bit": ckpt_bytes - 2 * linear + QUANTIZED_BYTES_PER_WEIGHT[4] * linear}
    from llamavid.model.memory import RUNTIME_OVERHEAD

    for key, flag in (("ask", "bf16"), ("ask4bit", "--quantize 4bit")):  # a measured peak, when larger, wins
        run = measured.get(key) or {}
        if "peak" in run and "error" not in run:
            weights[flag] = max(weights[flag], run["peak"] - RUNTIME_OVERHEAD)
    working_per_token = 2 * 32 * 128 * 2 + 4096  # one layer's keys and values in bf16, the chunk mask
    working_fixed = 14 * 4096 * 11008  # one layer's activations on a 4,096-token chunk
    table = fits_table(weights, per_token, working_per_token, working_fixed)
    print(f"What fits where (bytes per token {source}: " + ", ".join(f"{m} {v:,.0f}" for m, v in per_token.items())
          + f"; weights {', '.join(f'{k} {v / 1e9:.1f} GB' for k, v in weights.items())}):")
    print(table, flush=True)
    return table


def kv_part(long: Path, dev: str, args, ckpt_bytes: int, load: dict) -> dict:
    """Reduced-depth measurements and their per-layer extrapolation to the 32-layer model."""
    runs = []
    for tokens in [int(t) for t in args.kv_tokens.split(",") if t]:
        for mode in args.kv_modes.split(","):
            for depth in (1, 2):
                r = run_child("kv",
                              {"config": str(long / "config.json"), "depth": depth, "tokens": tokens, "mode": mode,
                                     "device": dev, "fill": not args.kv_compute_all}, args.timeout)
                runs.append(r)
                if "error" in r:
                    print(f"kv {mode} depth {depth} {tokens}: {r['error']}", flush=True)
    if args.kv_long:
        r = run_child("kv", {"config": str(long / "config.json"), "depth": 1, "tokens": args.kv_long, "mode": "int4",
                             "device": dev, "new": 2, "fill": not args.kv_compute_all}, args.timeout)
        runs.append(r)
        if "error" in r:
            print(f"kv int4 depth 1 {args.kv_long}: {r['error']}", flush=True)
    ok = [r for r in runs if "error" not in r]
    print("KV cache, long-video config at real width (4096 wide, 32 heads of 128, rope linear x16), bf16, "
          "prompt prefilled in chunks, measured at depth 1 and 2:", flush=True)
    print("(each run: the cache filled up to the last 4,096-token chunk with random keys and values, then that chunk "
          "prefilled through the model and a few tokens decoded; peak = VmHWM during those, above the RSS before them)")
    print("| mode | prompt tokens | depth | KV bytes/token (measured) | peak above start (last chunk + decode) | last "
          "chunk s | decode s/token |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in ok:
        print(f"| {r['mode']} | {r['tokens']:,} | {r['depth']} | {r['cache_bytes'] / r['tokens']:,.0f} | "
              f"{gb(r['peak'] - r['rss_before'])} | {r['prefill_s']:.1f} | {r['decode_s_per_token']:.2f} |")
    extrap = {}
    weights_rss = load.get("rss") or ckpt_bytes

    def working_of(r: dict) -> float:  # peak above the start, less what the cache grew by during the measured part
        grown = r["cache_bytes"] * (r["tokens"] - r.get("prefilled_from", 0)) / r["tokens"]
        return (r["peak"] - r["rss_before"]) - grown

    long_runs = [r for r in ok if r["tokens"] == args.kv_long and r["depth"] == 1]
    for r in long_runs:
        print(f"measured at {r['tokens']:,} tokens, {r['mode']}, depth 1: cache {gb(r['cache_bytes'])}, working memory "
              f"{gb(working_of(r))} (attention mask, one layer's keys and values in bf16, activations of a "
              "chunk), last "
              f"chunk {r['prefill_s']:.0f} s, decode {r['decode_s_per_token']:.2f} s/token", flush=True)
        extrap[f"measured_long/{r['tokens']}"] = {"working": working_of(r), "cache": r["cache_bytes"]}
    long_working = working_of(long_runs[0]) if long_runs else None
    print("Extrapolated to 32 layers, per layer: KV(32) = 32 x (cache bytes at depth 2 - at depth 1) / "
          "tokens x prompt "
          f"tokens; working = the depth-1 run's (at {args.kv_long:,} tokens: the measured long run's); total = weights "
          f"resident after load ({gb(weights_rss)}) + KV(32) + working:")
    print("| mode | prompt tokens | KV bytes/token, 32 layers | KV cache | working | total |")
    print("|---|---:|---:|---:|---:|---:|")
    by = {(r["mode"], r["tokens"], r["depth"]): r for r in ok}
    for (mode, tokens, depth), r1 in sorted(by.items()):
        if depth != 1 or (mode, tokens, 2) not in by:
            continue
        r2 = by[(mode, tokens, 2)]
        per_token = 32 * (r2["cache_bytes"] - r1["cache_bytes"]) / tokens
        for target in sorted({tokens, args.kv_long} - {0}):
            working = working_of(r1) if target == tokens or long_working is None else long_working
            total = weights_rss + per_token * target + working
            extrap[f"{mode}/{target}"] = {"per_token": per_token, "kv": per_token * target, "working": working,
                                          "total": total, "measured_at": tokens}
            print(f"| {mode} | {target:,} | {per_token:,.0f} | {gb(per_token * target)} | {gb(working)} | "
                  f"{gb(total)} |")
    return {"runs": runs, "extrapolated": extrap}


if __name__ == "__main__":
    main()
