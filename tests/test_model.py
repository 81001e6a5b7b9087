"""The core model against the published formulas, on a tiny random checkpoint in the published layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reference_impl as ref
import torch
from checkpoint_fixture import (
    QF_HIDDEN,
    QF_INTER,
    QF_LAYERS,
    VISION_BLOCKS_IN_FILE,
    VISION_WIDTH,
    build_tiny_checkpoint,
)

import llamavid
from llamavid.core.errors import CheckpointError, ContextOverflowError
from llamavid.model.checkpoint import KEY_MAP, is_ignored, to_checkpoint_key, to_module_key
from llamavid.pipeline.inputs import FeaturesInMemory

QUESTION = "What color is the shape?"


def random_features(t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(t, 257, VISION_WIDTH, generator=torch.Generator().manual_seed(seed))


def reference_tokens(fx, features: torch.Tensor, question: str, compress, projector="mlp2x_gelu", long_video=False):
    """Tokens per frame computed from the fixture's raw tensors: transformers' QFormer + the formulas."""
    vocab = [line for line in (fx.extra["bert_dir"] / "vocab.txt").read_text().splitlines() if line]
    ids = torch.tensor([ref.wordpiece_ids(question, vocab)] * features.shape[0])
    mask = torch.ones_like(ids)
    hf = ref.transformers_qformer(fx.state_dict, len(vocab) + 1, QF_HIDDEN, QF_LAYERS, QF_HIDDEN // 64, QF_INTER,
                                  VISION_WIDTH)
    image = features[:, 1:] if long_video else features
    with torch.no_grad():
        queries = ref.qformer_queries(hf, fx.state_dict, ids, mask, image)
        return ref.frame_tokens(fx.state_dict, queries, features[:, 1:], compress, projector)


# --- loading -------------------------------------------------------------------------------------------------

def test_fixture_loads_with_every_key_used(tiny, tiny_model):
    """Every checkpoint tensor lands in a parameter, with its value; no parameter is left without one."""
    params = dict(tiny_model.named_parameters())
    used = set()
    for key, value in tiny.state_dict.items():
        if is_ignored(key):
            continue
        name = to_module_key(key)
        assert name is not None, key
        assert name in params, f"{key} -> {name} has no parameter"
        assert torch.equal(params[name].detach(), value.float()), key
        used.add(name)
    llm_and_heads = {n for n in params if not n.startswith(("vision.", "_vision."))}
    assert not (llm_and_heads - used), sorted(llm_and_heads - used)[:5]
    # the key map is a bijection on the names it touches
    for key in tiny.state_dict:
        if not is_ignored(key):
            assert to_checkpoint_key(to_module_key(key)) == key


def test_vision_tower_shapes_and_depth(tiny_model):
    vision = tiny_model.vision
    assert vision.config.width == VISION_WIDTH and vision.config.depth == VISION_BLOCKS_IN_FILE
    assert vision.config.heads == VISION_WIDTH // 88


def test_unexpected_key_fails_loudly(tmp_path):
    fx = build_tiny_checkpoint(tmp_path, n_shards=1)
    shard = fx.path / "pytorch_model-00001-of-00001.bin"
    sd = torch.load(shard, weights_only=True)
    sd["model.vlm_att_surprise.weight"] = torch.zeros(2)
    torch.save(sd, shard)
    with pytest.raises(CheckpointError, match="model.vlm_att_surprise.weight"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)


def test_missing_and_misshaped_keys_fail_loudly(tmp_path):
    fx = build_tiny_checkpoint(tmp_path, n_shards=1)
    shard = fx.path / "pytorch_model-00001-of-00001.bin"
    sd = torch.load(shard, weights_only=True)
    del sd["model.vlm_att_key_projector.bias"]
    torch.save(sd, shard)
    with pytest.raises(CheckpointError, match=r"missing keys model\.vlm_att_key_projector\.bias"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    sd["model.vlm_att_key_projector.bias"] = torch.zeros(VISION_WIDTH + 1)
    torch.save(sd, shard)
    with pytest.raises(CheckpointError, match=r"model\.vlm_att_key_projector\.bias \[177\]"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    sd["model.vlm_att_key_projector.bias"] = torch.zeros(VISION_WIDTH)
    del sd["model.layers.1.mlp.up_proj.weight"]
    torch.save(sd, shard)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)


def test_missing_qformer_weights_named(tmp_path):
    """One public issue reports the QFormer missing from a released checkpoint: say so clearly."""
    fx = build_tiny_checkpoint(tmp_path, n_shards=1)
    shard = fx.path / "pytorch_model-00001-of-00001.bin"
    sd = {k: v for k, v in torch.load(shard, weights_only=True).items() if "vlm_att_encoder" not in k}
    torch.save(sd, shard)
    with pytest.raises(CheckpointError, match="QFormer weights missing"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)


def test_long_video_config_context(tmp_path):
    fx = build_tiny_checkpoint(tmp_path, compress_type="mean_concat", max_token=65536,
                               rope_scaling={"type": "linear", "factor": 16.0}, bert_type="qformer_pretrain_freeze")
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    assert model.context_length == 65536
    assert model.config.long_video and model.tokens_per_frame == 2


# --- vision ---------------------------------------------------------------------------------------------------

def test_vision_features_equal_plain_eva(tiny, tiny_model):
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = tiny_model.encode_images(pixels, batch_size=2)
    expected = ref.eva_features(tiny.vision_state_dict, pixels, VISION_BLOCKS_IN_FILE, VISION_WIDTH // 88)
    assert ours.shape == (3, 257, VISION_WIDTH)
    assert (ours - expected).abs().max().item() < 1e-4
    assert not torch.allclose(ours[0], ours[1])  # frames are told apart


def test_vision_features_equal_transformers_instructblip_before_post_norm(tiny, tiny_model):
    """A second, library-made reference: InstructBlipVisionModel's last hidden state before post_layernorm."""
    from transformers import InstructBlipVisionConfig, InstructBlipVisionModel

    sd = tiny.vision_state_dict
    cfg = InstructBlipVisionConfig(hidden_size=VISION_WIDTH, intermediate_size=sd["blocks.0.mlp.fc1.weight"].shape[0],
                                   num_hidden_layers=VISION_BLOCKS_IN_FILE, num_attention_heads=VISION_WIDTH // 88,
                                   image_size=224, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu")
    hf = InstructBlipVisionModel(cfg).eval()
    mapped = {"embeddings.class_embedding": sd["cls_token"], "embeddings.position_embedding": sd["pos_embed"],
              "embeddings.patch_embedding.weight": sd["patch_embed.proj.weight"],
              "embeddings.patch_embedding.bias": sd["patch_embed.proj.bias"]}
    for i in range(VISION_BLOCKS_IN_FILE):
        b, h = f"blocks.{i}.", f"encoder.layers.{i}."
        mapped[h + "self_attn.qkv.weight"] = sd[b + "attn.qkv.weight"]
        mapped[h + "self_attn.qkv.bias"] = torch.cat([sd[b + "attn.q_bias"], torch.zeros(VISION_WIDTH),
                                                      sd[b + "attn.v_bias"]])
        mapped[h + "self_attn.projection.weight"] = sd[b + "attn.proj.weight"]
        mapped[h + "self_attn.projection.bias"] = sd[b + "attn.proj.bias"]
        for ours, theirs in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"),
                             ("mlp.fc2", "mlp.fc2")):
            mapped[h + theirs + ".weight"] = sd[b + ours + ".weight"]
            mapped[h + theirs + ".bias"] = sd[b + ours + ".bias"]
    missing, _ = hf.load_state_dict(mapped, strict=False)
    assert all(k.startswith("post_layernorm") for k in missing), missing
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(pixel_values=pixels).last_hidden_state  # post_layernorm is applied to this...
        expected = hf.encoder(hf.embeddings(pixels)).last_hidden_state  # ...so take the encoder output
    assert (tiny_model.encode_images(pixels) - expected).abs().max().item() < 1e-4


def test_336px_position_interpolation(tiny):
    from llamavid.model.vision import build_vision_tower

    vision = build_vision_tower(tiny.vision_state_dict, image_size=336)
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = vision(pixels)
    expected = ref.eva_features(tiny.vision_state_dict, pixels, VISION_BLOCKS_IN_FILE, VISION_WIDTH // 88)
    assert ours.shape == (1, 577, VISION_WIDTH)
    assert (ours - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("size", [(240, 320), (320, 240), (224, 224), (101, 333), (500, 180)])
def test_preprocessing_matches_clip_image_processor(size):
    """Our PIL path equals transformers' CLIPImageProcessor configured as the release's clip-patch14-224."""
    from transformers import CLIPImageProcessor

    from llamavid.model.vision import CLIP_MEAN, CLIP_STD, preprocess_frames

    proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                              do_center_crop=True, do_normalize=True, image_mean=list(CLIP_MEAN),
                              image_std=list(CLIP_STD),
                              do_convert_rgb=True)
    rng = np.random.default_rng(sum(size))
    frames = rng.integers(0, 256, size=(2, *size, 3), dtype=np.uint8)
    expected = torch.as_tensor(np.asarray(proc(list(frames), return_tensors="np")["pixel_values"]))
    ours = preprocess_frames(frames, 224)
    assert ours.shape == (2, 3, 224, 224)
    assert (ours - expected).abs().max().item() < 1e-5


def test_still_images_are_padded_with_the_mean_colour():
    from PIL import Image

    from llamavid.model.vision import expand_to_square

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = np.asarray(expand_to_square(img))
    assert sq.shape == (40, 40, 3)
    assert tuple(sq[0, 0]) == (122, 116, 104) and tuple(sq[20, 20]) == (255, 0, 0)


def test_bad_vision_tower_file_named(tmp_path, tiny):
    sd = dict(tiny.vision_state_dict)
    sd["blocks.1.mlp.fc2.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "eva_vit_g.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match=r"eva_vit_g\.pth.*blocks\.1\.mlp\.fc2\.weight"):
        llamavid.load_model(tiny.path, vision_tower=bad)
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"eva_vit_g\.pth: cannot read"):
        llamavid.load_model(tiny.path, vision_tower=bad)


def test_embedded_vision_tower_used_when_no_file(tmp_path, monkeypatch):
    """Full checkpoints hold a bf16 copy of the encoder: used when no eva_vit_g.pth is found; same identity."""
    fx = build_tiny_checkpoint(tmp_path, embed_vision=True)
    monkeypatch.chdir(tmp_path / "ckpt")  # the config's ./model_zoo/... path does not resolve from here
    model = llamavid.load_model(fx.path)
    assert "embedded" in model.vision_weights.description
    with_file = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    assert model.vision_identity()["fingerprint"] == with_file.vision_identity()["fingerprint"]
    bf16 = {k: v.to(torch.bfloat16).float() for k, v in fx.vision_state_dict.items()}
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    expected = ref.eva_features(bf16, pixels, VISION_BLOCKS_IN_FILE, VISION_WIDTH // 88)
    assert (model.encode_images(pixels) - expected).abs().max().item() < 1e-4


def test_an_embedded_vision_tower_wins_over_another_in_the_user_cache(tmp_path, tiny, monkeypatch):
    """The user cache's eva_vit_g.pth (left there by another model) is a last resort: a checkpoint that
    carries its own encoder keeps it; one without falls back to the cache's file."""
    from llamavid.model.checkpoint import user_cache_dir

    other = build_tiny_checkpoint(tmp_path / "other", seed=7)
    cached = user_cache_dir() / "eva_vit_g.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(other.vision_path.read_bytes())
    fx = build_tiny_checkpoint(tmp_path / "full", embed_vision=True)
    monkeypatch.chdir(tmp_path)  # the configs' ./model_zoo/... paths resolve to nothing from here
    model = llamavid.load_model(fx.path)
    assert "embedded" in model.vision_weights.description
    # a config pointing at an encoder of another width (the real EVA ViT-g beside a small model) is passed over
    from checkpoint_fixture import make_eva_state_dict

    wide = tmp_path / "wide" / "eva_vit_g.pth"
    wide.parent.mkdir()
    torch.save(make_eva_state_dict(torch.Generator().manual_seed(1), width=176, blocks=3, mlp=704), wide)
    config = json.loads((fx.path / "config.json").read_text())
    (fx.path / "config.json").write_text(json.dumps({**config, "mm_vision_tower": str(wide)}))
    assert "embedded" in llamavid.load_model(fx.path).vision_weights.description
    plain = llamavid.load_model(tiny.path)  # no embedded copy, its own file not found: the cache's
    assert plain.vision_weights.description == str(cached)


def test_vision_tower_found_through_config_path(tiny, monkeypatch):
    """The config says ./model_zoo/LAVIS/eva_vit_g.pth relative to the working directory, as published."""
    monkeypatch.chdir(tiny.path.parent)
    model = llamavid.load_model(tiny.path)
    assert model.vision_weights.description.endswith("eva_vit_g.pth")
    assert model.vision.config.depth == VISION_BLOCKS_IN_FILE


def test_other_encoder_has_other_fingerprint(tmp_path, tiny, tiny_model):
    other = build_tiny_checkpoint(tmp_path, seed=7)
    model = llamavid.load_model(tiny.path, vision_tower=other.vision_path)
    assert model.vision_identity()["fingerprint"] != tiny_model.vision_identity()["fingerprint"]


# --- the two tokens --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress,n_content", [("mean", 1), ("grid:2", 4), (None, 256)])
def test_context_and_content_tokens_equal_the_formulas(tmp_path, compress, n_content):
    fx = build_tiny_checkpoint(tmp_path, compress_type=compress, n_shards=3)
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path, dtype="float32")
    feats = random_features(5)
    ours = model.video_tokens(feats, QUESTION, chunk_frames=2)
    expected = reference_tokens(fx, feats, QUESTION, compress)
    assert ours.shape == (5, 1 + n_content, 64)
    assert (ours - expected).abs().max().item() < 1e-5


def test_linear_projector_and_long_video_tokens(tmp_path):
    """Long-video mode: CLS is dropped before the QFormer too (the published movie path)."""
    fx = build_tiny_checkpoint(tmp_path, projector="linear", compress_type="mean_concat", max_token=65536,
                               rope_scaling={"type": "linear", "factor": 16.0})
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    feats = random_features(3, seed=5)
    ours = model.video_tokens(feats, QUESTION)
    expected = reference_tokens(fx, feats, QUESTION, "mean", projector="linear", long_video=True)
    assert (ours - expected).abs().max().item() < 1e-5
    short = model.video_tokens(feats, QUESTION, long_video=False)
    assert (short - expected).abs().max().item() > 1e-4  # the QFormer input really differs


def test_chunking_bounds_memory_and_keeps_results(tiny_model):
    """Frames are read and pushed through the QFormer in chunks: never an all-frames batch."""
    feats = random_features(40, seed=6)
    seen_reads, seen_batches = [], []

    class Source:
        def __len__(self):
            return feats.shape[0]

        def features(self, start=0, stop=None, *, dtype=torch.float32):
            seen_reads.append(stop - start)
            return feats[start:stop]

    hook = tiny_model.qformer.register_forward_hook(lambda m, args, out: seen_batches.append(out.shape[0]))
    try:
        chunked = tiny_model.video_tokens(Source(), QUESTION, chunk_frames=8)
    finally:
        hook.remove()
    assert max(seen_reads) == 8 and sum(seen_reads) == 40
    assert max(seen_batches) == 8
    whole = tiny_model.video_tokens(feats, QUESTION, chunk_frames=64)
    assert (chunked - whole).abs().max().item() < 1e-5


def test_several_questions_batched_equal_one_by_one(tiny_model):
    feats = random_features(6, seed=8)
    questions = [QUESTION, "How many shapes are there in this long video, and what happens first?"]
    batched = tiny_model.video_tokens_batch(feats, questions, chunk_frames=4)
    for i, q in enumerate(questions):
        assert (batched[i] - tiny_model.video_tokens(feats, q)).abs().max().item() < 1e-5


def test_qformer_input_ids_are_plain_wordpiece(tiny, tiny_model):
    from llamavid.model.qformer import encode_questions

    vocab = [line for line in (tiny.extra["bert_dir"] / "vocab.txt").read_text().splitlines() if line]
    for text in (QUESTION, "Who is Murphy?", "what's HAPPENING, first... zebra!"):
        ids, _ = encode_questions(tiny_model.qformer_tokenizer, [text])
        assert ids[0].tolist() == ref.wordpiece_ids(text, vocab), text
    assert tiny_model.qformer_tokenizer.convert_tokens_to_ids("[DEC]") == len(vocab)
    long = " ".join(["red"] * 300) + " circle"
    ids, _ = encode_questions(tiny_model.qformer_tokenizer, [long])
    assert ids.shape[1] == 256
    assert ids[0, -2].item() == vocab.index("circle")  # truncated from the LEFT: the end is kept


# --- prompts ---------------------------------------------------------------------------------------------------

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def test_prompt_matches_published_templates_byte_for_byte(tiny_model):
    p = tiny_model.build_prompt("Who is Murphy?", n_frames=3, long_video=False)
    assert p == SYSTEM + " USER: <image>\nWho is Murphy? ASSISTANT:"
    p = tiny_model.build_prompt("Who is Murphy?", n_frames=3, long_video=False, template="llava_v1")
    assert p == ("A chat between a curious human and an artificial intelligence assistant. The assistant "
                 "gives helpful, "
                 "detailed, and polite answers to the human's questions. USER: <image>\nWho is Murphy? ASSISTANT:")
    p = tiny_model.build_prompt("And then?", n_frames=1, long_video=False, history=[("What is it?", "A dog.")])
    assert p == SYSTEM + " USER: What is it? ASSISTANT: A dog.</s>USER: <image>\nAnd then? ASSISTANT:"
    p = tiny_model.build_prompt("Q?", n_frames=1, long_video=False, template="plain")
    assert p == "<image>\nQ?\n"
    p = tiny_model.build_prompt("Who is Murphy?", n_frames=3, long_video=True, frame_subtitles=["", "Hi Murphy.", ""])
    assert p == (SYSTEM + " USER: Below is a movie. Memorize the content and answer my question after watching this "
                 "movie.<image><image>Hi Murphy.<image>Now the movie end.\nWho is Murphy? ASSISTANT:")


def test_prompt_ids_match_sentencepiece(tiny, tiny_model):
    import sentencepiece as spm

    from llamavid.model.prompt import IMAGE_SLOT

    sp = spm.SentencePieceProcessor(model_file=str(tiny.path / "tokenizer.model"))
    prompt = SYSTEM + " USER: What is it? ASSISTANT: A dog.</s>USER: <image>\nAnd then? ASSISTANT:"
    ids = tiny_model.prompt_ids(prompt)
    before, after = prompt.split("<image>")
    head, tail = before.split("</s>")
    expected = [1] + sp.encode(head) + [2] + sp.encode(tail) + [IMAGE_SLOT] + sp.encode(after)
    assert ids == expected
    assert sp.encode(after)[0] == sp.piece_to_id("▁") or sp.id_to_piece(sp.encode(after)[0]).startswith("▁")


# --- generation ------------------------------------------------------------------------------------------------

def naive_greedy(model, embeds: torch.Tensor, steps: int, eos: int) -> list[int]:
    """Greedy decoding by recomputing the whole sequence every step (no cache, no chunking)."""
    out = []
    x = embeds[None]
    with torch.no_grad():
        for _ in range(steps):
            logits = model.llm(inputs_embeds=x).logits[0, -1]
            tok = int(logits.argmax())
            if tok == eos:
                break
            out.append(tok)
            x = torch.cat([x, model.llm.get_input_embeddings()(torch.tensor([[tok]]))], dim=1)
    return out


def prompt_embeds(model, feats, question):
    tokens = model.video_tokens(feats, question)
    prompt = model.build_prompt(question, n_frames=feats.shape[0], long_video=False)
    return model.embed_prompt(model.prompt_ids(prompt), model.visual_blocks(tokens, long_video=False))


def test_splice_puts_visual_tokens_at_the_image_slot(tiny_model):
    feats = random_features(3, seed=9)
    tokens = tiny_model.video_tokens(feats, QUESTION)
    ids = tiny_model.prompt_ids(tiny_model.build_prompt(QUESTION, n_frames=3, long_video=False))
    emb = tiny_model.embed_prompt(ids, [tokens.flatten(0, 1)])
    slot = ids.index(-200)
    table = tiny_model.llm.get_input_embeddings().weight
    assert emb.shape[0] == len(ids) - 1 + 6
    assert torch.equal(emb[:slot], table[ids[:slot]])
    assert torch.equal(emb[slot:slot + 6], tokens.flatten(0, 1))
    assert torch.equal(emb[slot + 6:], table[ids[slot + 1:]])


def test_greedy_generation_equals_naive_decoding_and_stops_at_eos(tmp_path):
    fx = build_tiny_checkpoint(tmp_path)
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    feats = random_features(2, seed=10)
    emb = prompt_embeds(model, feats, QUESTION)
    free = naive_greedy(model, emb, 12, eos=-1)
    assert len(free) == 12
    # Make </s> win at the 4th step: give it the head row of the token the model picks there, scaled up.
    with torch.no_grad():
        model.llm.lm_head.weight[2] = model.llm.lm_head.weight[free[3]] * 1.5
    expected = naive_greedy(model, emb, 12, eos=2)
    assert 1 <= len(expected) < 12
    streamed = []
    answer = llamavid.answer_features(model, feats, QUESTION, temperature=0, max_new_tokens=12, stream=streamed.append)
    assert answer.new_tokens == len(expected)
    assert answer.text == model.text_tokenizer.decode(expected).strip()
    assert "".join(streamed).strip() == answer.text  # the stream holds back partial characters, then flushes


def test_sampling_is_repeatable_with_a_seed(tiny_model):
    feats = random_features(2, seed=11)
    opts = llamavid.AskOptions(temperature=0.9, top_p=0.9, max_new_tokens=15, seed=123)
    a = llamavid.answer_features(tiny_model, feats, QUESTION, opts)
    b = llamavid.answer_features(tiny_model, feats, QUESTION, opts)
    c = llamavid.answer_features(tiny_model, feats, QUESTION, opts, seed=124)
    assert a.text == b.text
    assert a.text != c.text


def test_top_p_keeps_only_the_nucleus():
    from llamavid.model.generation import SamplingOptions, pick_tokens

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    picks = {int(pick_tokens(logits, SamplingOptions(temperature=1.0, top_p=0.7), gen)) for _ in range(300)}
    assert picks == {0, 1}
    assert int(pick_tokens(logits, SamplingOptions(temperature=0), None)) == 0


def test_batched_answers_equal_single_answers(tiny_model):
    feats = random_features(3, seed=12)
    questions = [QUESTION, "Who is Murphy and what does he say in this video?"]
    opts = llamavid.AskOptions(temperature=0, max_new_tokens=8)
    vin = llamavid.VideoInput("features", FeaturesInMemory(feats), [])
    batched = llamavid.answer_questions(tiny_model, vin, [llamavid.Question(q, opts) for q in questions])
    assert all(r.ok for r in batched)
    for q, got in zip(questions, batched):
        single = llamavid.answer_features(tiny_model, feats, q, opts)
        assert got.answer.text == single.text and got.answer.prompt_tokens == single.prompt_tokens


def test_prompt_longer_than_the_context_is_refused(tmp_path):
    fx = build_tiny_checkpoint(tmp_path, max_position_embeddings=128)
    model = llamavid.load_model(fx.path, vision_tower=fx.vision_path)
    with pytest.raises(ContextOverflowError, match=r"40 frames x 2 tokens.*context holds 128") as refused:
        llamavid.answer_features(model, random_features(40), QUESTION, strict_context=True, max_new_tokens=4)
    assert refused.value.context == 128 and 0 < refused.value.frames_fit < 40
    assert refused.value.needed > 128 and refused.value.suggestions == {"max_frames": refused.value.frames_fit}


# --- bad input -------------------------------------------------------------------------------------------------

def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(llamavid.ModelNotFoundError, match="no-such-dir"):
        llamavid.load_model(tmp_path / "no-such-dir")


def test_config_without_llamavid_keys(tmp_path):
    fx = build_tiny_checkpoint(tmp_path)
    cfg = json.loads((fx.path / "config.json").read_text())
    for key in ("mm_vision_tower", "bert_type"):
        cfg.pop(key)
    (fx.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError,
                       match=r"config\.json: not a LLaMA-VID config \(missing mm_vision_tower, bert_type\)"):
        llamavid.load_model(fx.path)


def test_truncated_shard_named(tmp_path):
    fx = build_tiny_checkpoint(tmp_path)
    shard = fx.path / "pytorch_model-00002-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"pytorch_model-00002-of-00002\.bin: cannot be read"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)


def test_missing_shard_named(tmp_path):
    fx = build_tiny_checkpoint(tmp_path)
    (fx.path / "pytorch_model-00001-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match=r"missing: pytorch_model-00001-of-00002\.bin"):
        llamavid.load_model(fx.path, vision_tower=fx.vision_path)


def test_errors_are_one_line(tmp_path):
    with pytest.raises(llamavid.LlamaVidError) as caught:
        llamavid.load_model(tmp_path / "x\ny")
    assert "\n" not in str(caught.value) and "x y" in str(caught.value)


def test_key_map_covers_every_published_prefix():
    prefixes = [p for p, _ in KEY_MAP]
    for key in ("model.vlm_att_query", "model.vlm_att_ln.weight", "model.mm_projector.0.weight", "lm_head.weight",
                "model.layers.0.self_attn.q_proj.weight", "model.vision_tower.vision_tower.cls_token"):
        assert to_module_key(key) is not None, key
    assert len(prefixes) == len(set(prefixes))
