"""Training: each stage of the recipe, a few steps on the tiny fixture.

What must hold: the loss on the training batch goes down, exactly the stage's parameters change (the
others are bit-identical), the checkpoint written loads through the public loader, and an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
from media import make_image, make_video, write_srt

import llamavid
from llamavid.core.errors import InputError
from llamavid.train.data import ConversationDataset, FeatureStore, load_samples
from llamavid.train.objective import batch_loss
from llamavid.train.stages import STAGES
from llamavid.train.trainer import TrainConfig, latest_checkpoint, train

ANSWERS = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two videos (one with subtitles), an image and a text-only sample, in LLaVA JSON."""
    root = tmp_path_factory.mktemp("train-data")
    make_video(root / "a.mp4", seconds=3, fps=4)
    make_video(root / "b.mp4", seconds=2, fps=4, width=64, height=96)
    write_srt(root / "b.srt", [(0.0, 1.5, "hello there")])
    make_image(root / "c.png", 9)
    items = [
        {"id": "a", "video": "a.mp4", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": ANSWERS[0]},
            {"from": "human", "value": "And its color?"}, {"from": "gpt", "value": "red"}]},
        {"id": "b", "video": "b.mp4", "long": True, "conversations": [
            {"from": "human", "value": "<image>\nWhat is said?"}, {"from": "gpt", "value": "hello there"}]},
        {"id": "c", "image": "c.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": ANSWERS[1]}]},
        {"id": "t", "conversations": [
            {"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]},
    ]
    path = root / "train.json"
    path.write_text(json.dumps(items))
    return path


def _loss_on_all(model_dir, tiny, data, features) -> float:
    model = llamavid.load_model(model_dir, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    samples = load_samples([data])
    store = FeatureStore(features, model.vision_encoder)
    store.prepare([s.media for s in samples if s.media is not None])
    items = [ConversationDataset(samples, store)[i] for i in range(len(samples))]
    with torch.no_grad():
        return float(batch_loss(model, items, max_tokens=2048))


def _state(model_dir, tiny) -> dict[str, torch.Tensor]:
    model = llamavid.load_model(model_dir, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_trains_only_its_parameters(stage, tiny, dataset, tmp_path):
    out = tmp_path / f"stage{stage}"
    features = tmp_path / "features"
    cfg = TrainConfig(stage=stage, data=[str(dataset)], model=str(tiny.path), output=str(out),
                      vision_tower=str(tiny.vision_path), feature_cache=str(features), epochs=6, batch_size=4,
                      micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, save_steps=4, seed=1)
    result = train(cfg)
    assert result.steps == 6 and result.resumed_from == 0
    before = _loss_on_all(tiny.path, tiny, dataset, features)
    after = _loss_on_all(result.model_dir, tiny, dataset, features)
    assert after < before - 0.2, (before, after)

    start, end = _state(tiny.path, tiny), _state(result.model_dir, tiny)
    assert start.keys() == end.keys()
    trainable = STAGES[stage].trainable
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    for key in start:
        if key.startswith(trainable):
            continue
        assert key not in changed, f"stage {stage} changed frozen {key}"
    # every trained group moved (the final norm / embeddings of unused rows may stay: check per group)
    for prefix in trainable:
        assert any(k.startswith(prefix) for k in changed), f"stage {stage} did not train {prefix}"
    # the vision encoder is frozen in every stage: the saved model points at the same weights
    saved = llamavid.load_model(result.model_dir, device="cpu", dtype="float32")
    assert saved.vision_identity()["fingerprint"] == llamavid.load_model(
        tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32").vision_identity()["fingerprint"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint(tiny, dataset, tmp_path):
    out = tmp_path / "run"
    common = dict(stage=1, data=[str(dataset)], model=str(tiny.path), output=str(out),
                  vision_tower=str(tiny.vision_path),
                  feature_cache=str(tmp_path / "features"), epochs=4, batch_size=4, micro_batch_size=2,
                  learning_rate=1e-3, save_steps=2, seed=3)

    class Stop(Exception):
        pass

    def stop_at_3(record: dict) -> None:
        if record.get("step") == 3:
            raise Stop()

    with pytest.raises(Stop):
        train(TrainConfig(**common, log_every=1), on_log=stop_at_3)
    assert latest_checkpoint(out).name == "checkpoint-2"
    assert not (out / "model").exists()
    resumed = train(TrainConfig(**common))
    assert resumed.resumed_from == 2 and resumed.steps == 4
    full = train(TrainConfig(**{**common, "output": str(tmp_path / "full")}))
    a, b = _state(resumed.model_dir, tiny), _state(full.model_dir, tiny)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_bad_training_data_is_one_clear_error(tiny, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "video": "missing.mp4", "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}]))
    with pytest.raises(InputError, match="missing.mp4"):
        load_samples([bad])
    bad.write_text("[{")
    with pytest.raises(InputError, match="bad.json"):
        load_samples([bad])
    with pytest.raises(InputError, match="--stage 4"):
        train(TrainConfig(stage=4, data=[str(bad)], model=str(tiny.path), output=str(tmp_path / "o")))


@pytest.mark.slow
def test_a_model_trained_from_the_demo_is_self_contained(tmp_path, capsys):
    """`train --model demo` then `ask --model run/model`, after moving the run folder: the output carries the
    vision encoder the demo embeds, is written as safetensors under the published key names, and saving warns
    about nothing."""
    from conftest import run_cli
    from safetensors import safe_open

    make_video(tmp_path / "v.mp4", seconds=2, fps=4)
    (tmp_path / "d.json").write_text(json.dumps([{"id": "a", "video": "v.mp4", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]}]))
    code, out, err = run_cli(capsys, "train", "--stage", "2", "--data", tmp_path / "d.json", "--model", "demo",
                             "-o", tmp_path / "run", "--global-batch-size", "1", "--micro-batch-size", "1")
    assert code == 0, err
    assert "warning" not in err.lower() and "Removed shared tensor" not in err
    moved = tmp_path / "elsewhere"
    (tmp_path / "run").rename(moved)
    files = sorted(p.name for p in (moved / "model").iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pth", ".pkl")) for f in files), files
    with safe_open(moved / "model" / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert "model.vlm_att_query" in keys and "model.mm_projector.0.weight" in keys
    assert any(k.startswith("model.vision_tower.vision_tower.") for k in keys)  # the encoder travels with it
    code, out, err = run_cli(capsys, "ask", tmp_path / "v.mp4", "What color is the shape?", "--model", moved / "model",
                             "--temperature", "0", "--max-new-tokens", "4")
    assert code == 0, err
    assert out.strip()


@pytest.mark.slow
def test_a_model_trained_from_a_vision_file_links_it_beside_itself(tiny, dataset, tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(capsys, "train", "--stage", "1", "--data", dataset, "--model", tiny.path,
                             "--vision-tower", tiny.vision_path, "-o", tmp_path / "run", "--global-batch-size", "2",
                             "--micro-batch-size", "2", "--epochs", "0.5")
    assert code == 0, err
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "eva_vit_g.pth").read_bytes() == tiny.vision_path.read_bytes()
    assert json.loads((model_dir / "config.json").read_text())["mm_vision_tower"] == "eva_vit_g.pth"
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    model = llamavid.load_model(moved / "model", device="cpu", dtype="float32")  # no --vision-tower needed
    assert model.vision_weights.description == str(moved / "model" / "eva_vit_g.pth")


@pytest.mark.parametrize("per_module", [False, True])
def test_clipping_per_module_keeps_a_vision_side_loss_from_shrinking_the_llms_step(tiny, per_module):
    """A grounding loss trains only the vision side; with clip_per_module its large gradient must leave the
    LLM's gradient as it was, and without it both are scaled by one total norm (torch's own clip, computed
    here by hand)."""
    from llamavid.train.stages import apply_freezing, get_stage
    from llamavid.train.trainer import clip_groups_of

    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    apply_freezing(model, get_stage(2))  # stage 2 trains the LLM and the vision side's QFormer and projector
    llm_ids = {id(p) for p in model.llm.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    for p in trained:  # the LLM's gradient norm well under 1, the vision side's far over it
        scale = 1e-4 if id(p) in llm_ids else 10.0
        p.grad = torch.randn(p.shape, generator=gen) * scale
    before = {id(p): p.grad.clone() for p in trained}
    llm_norm = torch.linalg.vector_norm(torch.stack([before[id(p)].norm() for p in trained if id(p) in llm_ids]))
    rest_norm = torch.linalg.vector_norm(torch.stack([before[id(p)].norm() for p in trained if id(p) not in llm_ids]))
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in before.values()]))
    assert llm_norm < 1.0 < total
    groups = clip_groups_of(model, trained, per_module)
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in trained)  # every one, once
    for group in groups:
        torch.nn.utils.clip_grad_norm_(group, 1.0)
    for p in trained:
        if id(p) in llm_ids:
            want = before[id(p)] if per_module else before[id(p)] / (total + 1e-6)
        else:
            want = before[id(p)] / ((rest_norm if per_module else total) + 1e-6)
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-9)


def test_the_feature_store_takes_an_up_to_date_file_without_probing_and_remakes_a_damaged_one(
        tiny, dataset, tmp_path, monkeypatch):
    """Each stage prepares every video of its data (thousands in the demo recipe); one already encoded is
    checked (checksums included) but not probed again, and a store checks it once. A damaged one is made
    again."""
    import llamavid.features.encode as encode_module

    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    media = sorted({s.media for s in load_samples([dataset]) if s.media is not None})
    features = tmp_path / "features"
    assert FeatureStore(features, model.vision_encoder).prepare(media) == len(media)
    probes = []
    real_probe = encode_module.video.probe
    monkeypatch.setattr(encode_module.video, "probe", lambda p, *a, **k: (probes.append(p), real_probe(p, *a, **k))[1])
    store = FeatureStore(features, model.vision_encoder)
    assert store.prepare(media) == 0 and store.prepare(media) == 0
    assert probes == []
    victim = store.path_for(media[0])
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF  # a flipped byte in the last block: it fails its checksum
    victim.write_bytes(bytes(data))
    assert FeatureStore(features, model.vision_encoder).prepare(media) == 1
    assert probes == [media[0]]
