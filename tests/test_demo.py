"""The shipped demo model answers held-out synthetic videos correctly, through the real CLI.

The clips are rendered here by the synthetic generator from the test split's seed (never used in
training); the cases are fixed, greedy decoding makes the answers deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from llamavid.data import synthetic
from llamavid.model.builtin import resolve_builtin

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_model_is_shipped_small_and_safe():
    path = resolve_builtin("demo")
    assert path is not None, "llamavid/assets/demo is missing: python -m llamavid.train.demo train --ship"
    files = {p.name: p.stat().st_size for p in path.iterdir() if p.is_file()}
    assert sum(files.values()) <= 30 * 2**20
    assert any(name.endswith(".safetensors") for name in files)
    assert not any(name.endswith((".bin", ".pth", ".pkl")) for name in files), files


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    made = synthetic.make_clips("test", n_single=4, n_sequence=3, seed=11)
    synthetic.write_split(made, root)
    return root, json.loads((root / "qa.json").read_text())


def _ask(capsys, video: Path, question: str, *extra: str) -> dict:
    code, out, err = run_cli(capsys, "ask", video, question, "--model", "demo", "--temperature", "0", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


CASES = [  # (clip id, question type) of the held-out clips made above
    ("test-single-0000", "color"), ("test-single-0000", "shape"),
    ("test-single-0001", "color"), ("test-single-0001", "shape"),
    ("test-single-0002", "color"), ("test-single-0002", "shape"),
    ("test-sequence-0000", "first"), ("test-sequence-0001", "last"),
]


@pytest.mark.slow
@pytest.mark.parametrize("clip_id,qtype", CASES)
def test_demo_answers_heldout_videos(clip_id, qtype, clips, capsys):
    root, items = clips
    item = next(i for i in items if i["id"].startswith(clip_id + "-") and i["question_type"] == qtype)
    question = item["conversations"][0]["value"].replace("<image>", "").strip()
    out = _ask(capsys, root / item["video"], question)
    assert out["answer"].strip().lower().split()[0].strip(".") == item["answer"], (item, out)


def test_readme_example_answers(capsys):
    """The README's main-job command, on the shipped example video."""
    out = _ask(capsys, EXAMPLES / "red-circle.mp4", "What color is the shape?")
    assert out["answer"].strip().lower().startswith("red")
    assert out["frames"] == 4


def test_regenerating_the_results_keeps_the_sections_other_scripts_measured(tmp_path):
    from llamavid.train.demo_eval import KEPT_MARKER, _kept_sections

    results = tmp_path / "RESULTS.md"
    assert _kept_sections(results) == ""  # no file yet
    results.write_text("# Results\n\nold generated part\n")
    assert _kept_sections(results) == ""  # nothing kept: all of it is regenerated
    results.write_text(f"# Results\n\nold generated part\n\n{KEPT_MARKER}\n\n## KV cache\n\n| a | b |\n")
    kept = _kept_sections(results)
    assert kept.startswith(f"\n{KEPT_MARKER}") and kept.endswith("## KV cache\n\n| a | b |\n")
    assert "old generated part" not in kept


def test_the_training_word_pool_changes_only_what_is_said():
    """``word_pool`` swaps a share of the subtitles' code words for training-only ones, and nothing else:
    the videos (and so their cached features) and the test split stay exactly as they were."""
    plain = synthetic.make_clips("train", n_single=40, n_sequence=40, seed=3)
    pooled = synthetic.make_clips("train", n_single=40, n_sequence=40, seed=3, word_pool=0.5)
    assert [c.events for c in pooled] == [c.events for c in plain]
    assert [c.background for c in pooled] == [c.background for c in plain]
    swapped = [c for c, p in zip(pooled, plain) if c.subtitles != p.subtitles]
    assert 20 <= len(swapped) <= 60
    for clip in swapped:
        [(_, _, line)] = clip.subtitles
        word = line.removeprefix("The code word is ").rstrip(".")
        assert word in synthetic.TRAIN_CODE_WORDS and word not in synthetic.CODE_WORDS
        assert dict((t, a) for t, _, a in clip.qa)["subtitle"] == word
    assert not set(synthetic.TRAIN_CODE_WORDS) & set(synthetic.CODE_WORDS)
    assert not set(synthetic.TRAIN_CODE_WORDS) & (set(synthetic.COLORS) | set(synthetic.SHAPES))


def test_the_encoders_patch_kind_loss_weighs_a_shapes_patches():
    """``patch_kind_loss``: each patch's cross-entropy, a shape's patches (label > 0) weighted ``shape_weight``
    against the background's 1, over the sum of the weights; at weight 1 the plain mean, as before."""
    import torch

    from llamavid.train.demo import patch_kind_loss

    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[0, 2, 0], [4, 0, 0]])
    ce = [[-torch.log_softmax(logits[b, p], -1)[labels[b, p]].item() for p in range(3)] for b in range(2)]
    shape = ce[0][1] + ce[1][0]
    background = ce[0][0] + ce[0][2] + ce[1][1] + ce[1][2]
    assert patch_kind_loss(logits, labels, 5.0).item() == pytest.approx((5 * shape + background) / (5 * 2 + 4))
    assert patch_kind_loss(logits, labels, 1.0).item() == pytest.approx((shape + background) / 6)


def test_the_named_recipes_differ_from_the_shipped_one_only_where_they_say():
    """The recipes docs/RESULTS.md compares with the shipped one differ from it only where they say: the model
    shipped before (1,500 lures steps), the one before it (no lures step), the one before that (the encoder's
    patches weighed alike, five epochs of stage 2, no evidence loss), the steps between them, and the check
    questions on the one before."""
    from dataclasses import asdict

    from llamavid.train.demo import RECIPES, DemoRecipe

    shipped = asdict(DemoRecipe(**RECIPES["shipped"]))
    assert shipped["vision_shape_weight"] == 5.0 and shipped["stage2"]["epochs"] == 7 and shipped["evidence"] == 1.0
    assert shipped["lure_steps"] == 3000 and shipped["lure_share"] == 0.25 and shipped["phrase_lures"] == 0.0
    five = dict(shipped["stage2"], epochs=5)
    before = {"vision_shape_weight": 1.0, "stage2": five, "evidence": 0.0, "lure_steps": 0}
    for name, want in (("lures-1500", {"lure_steps": 1500}),
                       ("before-lures", {"lure_steps": 0}),
                       ("before-kinds", before),
                       ("kinds", {"stage2": five, "evidence": 0.0, "lure_steps": 0}),
                       ("kinds7", {"evidence": 0.0, "lure_steps": 0}),
                       ("checks", dict(before, check_share=1.0, phrase_steps=0))):
        recipe = asdict(DemoRecipe(**RECIPES[name]))
        assert {k: v for k, v in recipe.items() if v != shipped[k]} == want
    old = asdict(DemoRecipe(**RECIPES["before-look-closer"]))
    assert old["vision_shape_weight"] == 1.0 and old["stage2"]["epochs"] == 5 and old["evidence"] == 0.0
    assert "clip_per_module" not in old["stage2"] and old["n_pick"] == 0 and old["grounding"] == 0.0
