"""Defaults that fit: the dtype rule, refusing what cannot fit before loading, vision weights loaded straight
into the target dtype, and the KV-cache modes (quantized caches, the automatic choice, refusals)."""

from __future__ import annotations

import json

import pytest
import torch

import llamavid
from llamavid.core.callbacks import Callbacks
from llamavid.core.errors import InputError, MemoryLimitError
from llamavid.model import checkpoint as ckpt_io
from llamavid.model.devices import choose_dtype
from llamavid.model.kvcache import CacheShape, cache_bytes, make_cache, plan_cache
from llamavid.model.loading import model_weight_bytes
from llamavid.model.memory import RUNTIME_OVERHEAD, Probes, parse_size
from llamavid_cli.output import error_text

CPU = torch.device("cpu")
PLENTY = 1 << 40


def probes(available: int | None = PLENTY, bf16: str | None = None) -> Probes:
    return Probes(available=lambda device: available, cpu_bf16=lambda: bf16)


def said() -> tuple[list[str], Callbacks]:
    lines: list[str] = []
    return lines, Callbacks(status=lines.append)


@pytest.fixture(scope="module")
def tiny_bytes(tiny):
    groups = ckpt_io.route_checkpoint(tiny.path)
    return {dt: model_weight_bytes(groups, dt) for dt in (torch.float32, torch.bfloat16)} | {
        "4bit": model_weight_bytes(groups, torch.bfloat16, 4)}


# -- the dtype rule ------------------------------------------------------------------------------------------

def test_dtype_rule_on_the_cpu():
    weights = lambda dt: 27_000_000_000 if dt == torch.float32 else 13_500_000_000  # noqa: E731
    native = choose_dtype(None, CPU, weight_bytes=weights, probes=probes(bf16="AVX512-BF16"))
    assert (native.dtype == torch.bfloat16 and "natively (AVX512-BF16)" in native.note
            and "float32 to override" in native.note)
    roomy = choose_dtype(None, CPU, weight_bytes=weights, probes=probes(available=40_000_000_000))
    assert roomy.dtype == torch.float32 and roomy.note is None
    tight = choose_dtype("auto", CPU, weight_bytes=weights, probes=probes(available=22_100_000_000))
    assert tight.dtype == torch.bfloat16
    assert tight.note == ("loading in bfloat16: float32 weights (27.0 GB) would not fit the 22.1 GB available; "
                          "ask for float32 to override")
    unknown = choose_dtype(None, CPU, weight_bytes=weights, probes=probes(available=None))
    assert unknown.dtype == torch.float32
    # an explicit dtype is kept as given, whatever the machine
    assert choose_dtype("float32", CPU, weight_bytes=weights,
                        probes=probes(available=1, bf16="AMX-BF16")).dtype == torch.float32
    assert choose_dtype("bf16", CPU, probes=probes()).dtype == torch.bfloat16


def test_load_model_default_dtype_follows_the_rule_and_says_so_once(tiny, tiny_bytes):
    lines, cb = said()
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, callbacks=cb,
                                probes=probes(bf16="AVX512-BF16"))
    assert model.dtype == torch.bfloat16 and model.llm.model.embed_tokens.weight.dtype == torch.bfloat16
    assert len(lines) == 1 and lines[0].startswith("loading in bfloat16: this CPU computes it natively")
    lines, cb = said()
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, callbacks=cb, probes=probes())
    assert model.dtype == torch.float32 and lines == []
    # float32 would not fit but bfloat16 does: bfloat16, with the numbers
    room = RUNTIME_OVERHEAD + (tiny_bytes[torch.float32] + tiny_bytes[torch.bfloat16]) // 2
    lines, cb = said()
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, callbacks=cb, probes=probes(available=room))
    assert model.dtype == torch.bfloat16
    assert len(lines) == 1 and "would not fit" in lines[0] and "ask for float32 to override" in lines[0]
    assert model.weights.memory_left == room - tiny_bytes[torch.bfloat16] - RUNTIME_OVERHEAD


def test_weights_that_cannot_fit_are_refused_before_loading_with_what_would_fit(tiny, tiny_bytes, monkeypatch):
    loaded = []
    monkeypatch.setattr(llamavid.model.loading, "load_strict", lambda *a, **k: loaded.append(1))
    room = RUNTIME_OVERHEAD + (tiny_bytes[torch.float32] + tiny_bytes[torch.bfloat16]) // 2
    with pytest.raises(MemoryLimitError) as info:  # an explicit float32 is kept, and refused
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, dtype="float32", probes=probes(available=room))
    text = error_text(info.value)  # as the command line words it
    assert str(tiny.path) in text and "the weights in float32" in text and "\n" not in text
    assert "--dtype bfloat16" in text and "--quantize 4bit" in text
    assert loaded == []  # refused before any tensor was loaded
    room = RUNTIME_OVERHEAD + (tiny_bytes["4bit"] + tiny_bytes[torch.bfloat16]) // 2
    with pytest.raises(MemoryLimitError) as info:
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, probes=probes(available=room))
    assert "--quantize 4bit" in error_text(info.value) and "--dtype bfloat16 (" not in error_text(info.value)
    assert info.value.suggestions == {"quantize": "4bit"}
    with pytest.raises(MemoryLimitError, match="nothing smaller fits"):
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, probes=probes(available=1000))


def test_cli_refuses_in_one_line_without_a_traceback(tiny, tmp_path, capsys, monkeypatch):
    from conftest import model_args, run_cli

    clip = tmp_path / "clip.vidtok"
    clip.write_bytes(b"never read: loading is refused first")
    monkeypatch.setenv("LLAMAVID_MEMORY_LIMIT", "10MB")
    code, out, err = run_cli(capsys, "ask", clip, "what?", *model_args(tiny))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and out == ""
    assert lines[-1].startswith("llamavid: error:") and "but only 10.0 MB of memory is available" in lines[-1]
    assert "the weights in float32" in lines[-1] and "Traceback" not in err


def test_parse_size():
    assert parse_size("16GB") == 16_000_000_000 and parse_size("512MiB") == 512 * 2**20 and parse_size("2e9") == 2e9
    with pytest.raises(InputError, match="LLAMAVID_MEMORY_LIMIT"):
        parse_size("lots")


# -- vision weights straight into the target dtype ----------------------------------------------------------

def test_vision_encoder_loads_fp16_file_straight_into_bf16(tiny, tmp_path):
    half = tmp_path / "eva_vit_g.pth"
    torch.save({k: v.half() for k, v in tiny.vision_state_dict.items()}, half)  # the public file is fp16
    lines, cb = said()
    enc = llamavid.load_vision_encoder(vision_tower=half, device="cpu", callbacks=cb, probes=probes(bf16="AMX-BF16"))
    assert enc.dtype == torch.bfloat16 and len(lines) == 1 and "natively (AMX-BF16)" in lines[0]
    params = dict(enc.module.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    # per-tensor conversion: the values are the file's, rounded once to bf16
    w = tiny.vision_state_dict["blocks.1.mlp.fc1.weight"]
    assert torch.equal(params["blocks.1.mlp.fc1.weight"], w.half().to(torch.bfloat16))
    ref = llamavid.load_vision_encoder(vision_tower=half, device="cpu", dtype="float32")
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a, b = enc.encode_pixels(pixels).float(), ref.encode_pixels(pixels)
    assert ((a - b).norm() / b.norm()).item() < 0.02
    with pytest.raises(MemoryLimitError, match="vision encoder's weights in float32.*dtype='bfloat16'"):
        llamavid.load_vision_encoder(vision_tower=half, device="cpu", dtype="float32",
                                     probes=probes(available=RUNTIME_OVERHEAD
                                                   + enc.weights.weight_bytes(torch.float32) // 2 + 4096))


def test_release_file_pages_keeps_the_data(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"a": torch.arange(300_000, dtype=torch.float32)}, path)
    t = torch.load(path, mmap=True, weights_only=True)["a"]
    copy = ckpt_io.convert_tensors({"a": t}, "cpu", torch.float64)["a"]
    assert torch.equal(t, torch.arange(300_000, dtype=torch.float32))  # read again from the file after paging out
    assert copy.dtype == torch.float64 and torch.equal(copy, t.double())
    same = ckpt_io.convert_tensors({"a": t}, "cpu", torch.float32)["a"]
    assert same.data_ptr() == t.data_ptr()  # no copy when nothing changes


# -- the KV cache -------------------------------------------------------------------------------------------

SEVEN_B = CacheShape(layers=32, kv_heads=32, head_dim=128, dtype=torch.bfloat16, hidden=4096, intermediate=11008)


def test_bytes_per_token_of_the_7b_shape():
    assert SEVEN_B.bytes_per_token("full") == 524_288  # 512 KiB per token in bf16
    assert SEVEN_B.bytes_per_token("int8") / SEVEN_B.bytes_per_token("full") == pytest.approx(132 / 256)
    assert SEVEN_B.bytes_per_token("int4") / SEVEN_B.bytes_per_token("full") == pytest.approx(76 / 256)


def test_auto_picks_the_first_mode_that_fits_and_refuses_with_the_tokens_that_fit():
    tokens, chunk = 60_000, 4096
    need = {m: sum(SEVEN_B.need(m, tokens, chunk, 1)) for m in ("full", "int8", "int4")}
    assert need["int4"] < need["int8"] < need["full"]
    assert plan_cache(SEVEN_B, "auto", tokens=tokens, batch=1, chunk=chunk, device=CPU,
                      available=int(need["full"]) + 1) == ("full", None)
    mode, note = plan_cache(SEVEN_B, "auto", tokens=tokens, batch=1, chunk=chunk, device=CPU,
                            available=int(need["int8"]) + 1)
    assert mode == "int8" and "60,000-token" in note and "full KV cache to insist" in note
    assert plan_cache(SEVEN_B, "auto", tokens=tokens, batch=1, chunk=chunk, device=CPU,
                      available=int(need["int4"]) + 1)[0] == "int4"
    with pytest.raises(MemoryLimitError) as info:
        plan_cache(SEVEN_B, "auto", tokens=tokens, batch=1, chunk=chunk, device=CPU, available=int(need["int4"]) // 2)
    fit = info.value.fit_tokens
    assert 0 < fit < tokens and sum(SEVEN_B.need("int4", fit, chunk, 1)) <= need["int4"] // 2
    assert sum(SEVEN_B.need("int4", fit + 1, chunk, 1)) > need["int4"] // 2
    # an explicit mode is used as asked, or refused
    assert plan_cache(SEVEN_B, "int4", tokens=100, batch=1, chunk=chunk, device=CPU, available=None) == ("int4", None)
    with pytest.raises(MemoryLimitError):
        plan_cache(SEVEN_B, "full", tokens=tokens, batch=1, chunk=chunk, device=CPU, available=int(need["int8"]))
    with pytest.raises(InputError, match="offload.*GPU"):
        plan_cache(SEVEN_B, "offload", tokens=100, batch=1, chunk=chunk, device=CPU, available=None)


@pytest.mark.parametrize("mode,max_rel,per_head", [("int8", 0.02, 16 + 4), ("int4", 0.3, 8 + 3)])
def test_quantized_cache_stays_close_to_the_full_one(tiny_model, mode, max_rel, per_head):
    """Chunked prefill and a few decode steps through the LLM with each cache: logits stay close, and the
    quantized cache stores the bytes the arithmetic says (tiny model: head width 16, so int4 groups are 16:
    int8 = 16 codes + a float32 scale, int4 = 8 bytes of codes + a bf16 scale + a uint8 zero)."""
    from llamavid.model.generation import cache_argument

    llm = tiny_model.llm
    emb = torch.randn(1, 40, 64, generator=torch.Generator().manual_seed(1))
    logits = {}
    caches = {}
    for m in ("full", mode):
        cache = make_cache(llm, m)
        outs = []
        with torch.inference_mode():
            for start in range(0, 40, 16):  # chunked prefill, then one-token steps
                out = llm(inputs_embeds=emb[:, start:start + 16],
                          position_ids=torch.arange(start, min(40, start + 16))[None],
                          use_cache=True, **{cache_argument(llm): cache})
                outs.append(out.logits)
        logits[m], caches[m] = torch.cat(outs, dim=1), cache
    rel = ((logits[mode] - logits["full"]).norm() / logits["full"].norm()).item()
    assert 0 < rel < max_rel, rel
    per_token = cache_bytes(caches[mode]) / 40
    full = cache_bytes(caches["full"]) / 40
    shape = CacheShape.of(llm.config, torch.float32)
    assert full == shape.bytes_per_token("full")
    assert per_token == pytest.approx(shape.bytes_per_token(mode), rel=0.001)
    assert full / per_token == pytest.approx(16 * 4 / per_head)  # float32 head of 16 vs codes + scale (+ zero)


def test_answers_use_the_chosen_cache_and_a_prompt_that_fits_nothing_names_max_frames(tiny, monkeypatch):
    lines, cb = said()
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, dtype="float32", callbacks=cb,
                                probes=probes())
    used = []
    import llamavid.model.kvcache as kv

    make = kv.make_cache
    monkeypatch.setattr(kv, "make_cache", lambda llm, mode: used.append(mode) or make(llm, mode))
    feats = torch.randn(6, 257, 176, generator=torch.Generator().manual_seed(0))
    greedy = llamavid.AskOptions(temperature=0, max_new_tokens=4)
    answer = lambda **kw: llamavid.answer_features(model, feats, "What color?", greedy, callbacks=cb, **kw)  # noqa: E731
    full = answer()
    assert used == ["full"] and lines == []
    shape = CacheShape.of(model.llm.config, model.dtype)
    tokens = full.prompt_tokens + 4
    # leave room for the int8 cache only (LLAMAVID_MEMORY_LIMIT caps what planning sees): auto switches and
    # says so; the answer is the same here
    monkeypatch.setenv("LLAMAVID_MEMORY_LIMIT", str(int(sum(shape.need("int8", tokens, 4096, 1))) + 1))
    small = answer()
    assert used[-1] == "int8" and len(lines) == 1 and lines[0].startswith("KV cache in int8")
    assert small.text == full.text
    # a question scored on its kept cache (evidence) needs the full cache to fit: refused, saying so
    with pytest.raises(MemoryLimitError, match="without evidence"):
        answer(evidence=True)
    monkeypatch.setenv("LLAMAVID_MEMORY_LIMIT", str(int(sum(shape.need("int4", tokens - 3 * model.tokens_per_frame,
                                                                    4096, 1)))))
    qformer_runs = []
    monkeypatch.setattr(model, "video_tokens_batch", lambda *a, **k: qformer_runs.append(1))
    with pytest.raises(MemoryLimitError, match=r"use max_frames=[1-3]\b") as info:
        answer()
    assert "\n" not in str(info.value) and "quantize='8bit'" in str(info.value)
    assert 1 <= info.value.suggestions["max_frames"] <= 3 and info.value.fit_tokens > 0
    assert qformer_runs == []  # refused before any work
    with pytest.raises(MemoryLimitError, match="kv_cache='auto'"):
        answer(kv_cache="full")
    with pytest.raises(InputError, match="kv_cache='fast'"):
        llamavid.AskOptions(kv_cache="fast")


def test_kv_cache_option_reaches_the_model_and_a_vidtok_never_builds_the_encoder(tiny, tmp_path, capsys, monkeypatch):
    from conftest import model_args, run_cli

    seen = []
    import llamavid.tasks.qa as qa

    answer = qa.answer_questions
    monkeypatch.setattr(qa, "answer_questions",
                        lambda m, v, questions, **k: seen.extend(q.options.kv_cache for q in questions)
                        or answer(m, v, questions, **k))
    feats = tmp_path / "v.vidtok"
    import numpy as np

    from llamavid.features.vidtok import VidtokWriter

    w = VidtokWriter(feats, encoder=llamavid.load_vision_encoder(vision_tower=tiny.vision_path).identity(), fps=1.0,
                     source={"name": "v.mp4", "content_hash": "s1:test"})
    w.append(torch.randn(3, 257, 176), np.arange(3, dtype=np.float64))
    w.finalize()
    import llamavid.model.vision as vision

    monkeypatch.setattr(vision, "build_vision_tower", lambda *a, **k: pytest.fail("ask on a .vidtok built the encoder"))
    code, out, err = run_cli(capsys, "ask", feats, "what color?", "--json", "--kv-cache", "int4", *model_args(tiny))
    assert code == 0, err
    assert seen == ["int4"] and json.loads(out)["answer"] is not None
