"""Loading from the Hugging Face cache, tokenizer lookup order, devices, and CLI error rendering."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from checkpoint_fixture import build_tiny_checkpoint
from conftest import run_process

import llamavid
from llamavid.core.errors import CheckpointError, InputError, ModelNotFoundError
from llamavid_cli.output import error_text


def use_hf_cache(monkeypatch, cache) -> None:
    """Point huggingface_hub at ``cache`` (its constants are read once, when it is first imported)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))


def populate_hf_cache(cache, repo_id: str, src) -> None:
    """Lay a checkpoint out the way huggingface_hub caches a downloaded snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    shutil.copytree(src, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_load_by_hub_id_from_the_cache_offline(tmp_path, tiny, monkeypatch):
    cache = tmp_path / "hf"
    populate_hf_cache(cache, "YanweiLi/llama-vid-tiny-test", tiny.path)
    use_hf_cache(monkeypatch, cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = llamavid.load_model("YanweiLi/llama-vid-tiny-test", vision_tower=tiny.vision_path)
    assert model.tokens_per_frame == 2
    assert str(cache) in str(model.text_tokenizer.path)


def test_uncached_hub_id_offline_says_how_to_fix(tmp_path, monkeypatch):
    use_hf_cache(monkeypatch, tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        llamavid.load_model("YanweiLi/llama-vid-7b-full-224-video-fps-1")
    text = error_text(info.value)  # as the command line says it
    assert "HF_HUB_OFFLINE" in text and "--model DIR" in text and "LLAMAVID_MODEL" in text
    assert "model='DIR'" in str(info.value)  # as Python says it


def test_qformer_tokenizer_lookup_order(tmp_path, monkeypatch):
    fx = build_tiny_checkpoint(tmp_path, qformer_tokenizer=False)  # vocabulary outside the checkpoint
    use_hf_cache(monkeypatch, tmp_path / "empty")
    with pytest.raises(CheckpointError, match="bert-base-uncased.*qformer_tokenizer='PATH'") as info:
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)  # falls through to the hub id, offline
    assert "--qformer-tokenizer PATH" in error_text(info.value)
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path, qformer_tokenizer=fx.extra["bert_dir"])
    assert model.qformer_tokenizer.bos_token == "[DEC]"
    shutil.copytree(fx.extra["bert_dir"], fx.path / "qformer_tokenizer")
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    assert len(model.qformer_tokenizer) == fx.extra["bert_vocab"] + 1


def test_dtype_and_device_choices(tiny):
    with pytest.raises(InputError, match="float16'?: not supported on the CPU"):
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float16")
    with pytest.raises(InputError, match="unknown"):
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="int3")
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.llm.model.embed_tokens.weight.dtype == torch.bfloat16
    feats = torch.randn(2, 257, 176)
    assert model.video_tokens(feats, "What color?").dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            llamavid.load_model(tiny.path, device="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_loading_answers_close_to_full_precision(tiny, tiny_model, bits):
    """4-/8-bit loading through bitsandbytes (which runs on the CPU too): the decoder's Linear layers are
    quantized, and the LLM's logits stay close to full precision."""
    import bitsandbytes as bnb

    kw = {"load_in_8bit": True} if bits == 8 else {"load_in_4bit": True}
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32", **kw)
    kind = bnb.nn.Linear8bitLt if bits == 8 else bnb.nn.Linear4bit
    assert isinstance(model.llm.model.layers[0].self_attn.q_proj, kind)
    emb = torch.randn(1, 12, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = tiny_model.llm(inputs_embeds=emb).logits
        quant = model.llm(inputs_embeds=emb).logits
    rel = ((quant - full).norm() / full.norm()).item()
    assert rel < (0.05 if bits == 8 else 0.25), rel
    answer = llamavid.answer_features(model, torch.randn(2, 257, 176), "What color?", temperature=0, max_new_tokens=4,
                                      long=False)
    assert answer.frames == 2 and 0 <= answer.new_tokens <= 4
    assert answer.prompt_tokens == model.prompt("What color?", n_frames=2, long_video=False).tokens


def test_quantized_loading_without_bitsandbytes_says_so(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(InputError, match=r"needs bitsandbytes: pip install 'llamavid\[quant\]'"):
        llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, load_in_8bit=True)


def test_safetensors_single_file_checkpoint(tmp_path, tiny):
    from safetensors.torch import save_file

    ckpt = tmp_path / "st"
    shutil.copytree(tiny.path, ckpt, ignore=shutil.ignore_patterns("pytorch_model*"))
    save_file({k: v.contiguous() for k, v in tiny.state_dict.items()}, str(ckpt / "model.safetensors"))
    model = llamavid.load_model(ckpt, vision_tower=tiny.vision_path)
    ref = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path)
    assert torch.equal(model.tokens.value_projector.weight, ref.tokens.value_projector.weight)


# --- the CLI turns every error into one line -------------------------------------------------------------------

def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llamavid: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.slow
def test_cli_bad_checkpoints_give_one_line_errors(tmp_path):
    assert_one_line_error(run_process("info", str(tmp_path / "missing-model")), "missing-model")

    fx = build_tiny_checkpoint(tmp_path / "a")
    cfg = json.loads((fx.path / "config.json").read_text())
    del cfg["mm_vision_tower"]
    (fx.path / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_process("info", str(fx.path)), "config.json", "not a LLaMA-VID config")

    fx = build_tiny_checkpoint(tmp_path / "b")
    shard = fx.path / "pytorch_model-00001-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    assert_one_line_error(run_process("info", str(fx.path)), "pytorch_model-00001-of-00002.bin", "truncated")

    fx = build_tiny_checkpoint(tmp_path / "c")
    sd = torch.load(fx.vision_path, weights_only=True)
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    torch.save(sd, fx.vision_path)
    assert_one_line_error(run_process("info", str(fx.path), "--vision-tower", str(fx.vision_path)),
                          "eva_vit_g.pth", "blocks.0.attn.qkv.weight")


@pytest.mark.slow
def test_cli_debug_shows_the_traceback(tmp_path):
    proc = run_process("info", str(tmp_path / "missing-model"), "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ModelNotFoundError" in proc.stderr


@pytest.mark.slow
def test_cli_info_json(tiny):
    proc = run_process("info", str(tiny.path), "--vision-tower", str(tiny.vision_path), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["tokens_per_frame"] == 2 and record["vision"]["tokens"] == 257
    assert record["vision"]["fingerprint"].startswith("eva:")


@pytest.mark.slow
def test_cli_version():
    proc = run_process("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"llamavid {llamavid.__version__}"


def test_vision_encoder_alone_from_a_file_or_a_model(tmp_path, tiny, tiny_model):
    """`encode` needs only the vision encoder: from eva_vit_g.pth, or from a checkpoint's embedded copy."""
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = tiny_model.encode_images(pixels)
    enc = llamavid.load_vision_encoder(vision_tower=tiny.vision_path, device="cpu")
    assert torch.equal(enc.encode_pixels(pixels), expected)
    assert enc.identity() == tiny_model.vision_identity()

    fx = build_tiny_checkpoint(tmp_path, embed_vision=True, n_shards=3)
    enc = llamavid.load_vision_encoder(fx.path, device="cpu")
    assert "embedded" in enc.weights.description
    assert (enc.identity()["fingerprint"]
            == llamavid.load_vision_encoder(vision_tower=fx.vision_path).identity()["fingerprint"])
