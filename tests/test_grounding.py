"""The phrase stage: the text-guided attention taught to find the colour and kind a phrase names."""

import numpy as np
import torch

from llamavid.data import synthetic as syn
from llamavid.train import grounding as g


def _cover(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(16, 14, 16, 14).mean(axis=(1, 3)).reshape(-1)


def test_drawn_frames_say_where_each_shape_is():
    rng = np.random.default_rng(3)
    frames, shapes, background = g.draw_frames(rng, 40)
    assert frames.shape == (40, syn.SIZE, syn.SIZE, 3) and frames.dtype == np.uint8
    assert {len(s) for s in shapes} <= {0, 1, 2} and {1, 2} <= {len(s) for s in shapes}
    for frame, found, empty in zip(frames, shapes, background):
        if len(found) == 2:
            assert found[0][:2] != found[1][:2]  # two different colour-kind pairs
        for color, _, patches in found:
            assert patches.any() and not (patches & empty).any()
            # a patch the shape covers holds the shape's colour (recomputed from the pixels)
            rgb = np.array(syn.COLORS[color], dtype=float)
            cells = frame.reshape(16, 14, 16, 14, 3).transpose(0, 2, 1, 3, 4).reshape(256, 14 * 14, 3)
            share = (np.abs(cells.astype(float) - rgb).sum(-1) < 30).mean(-1)
            assert (share[patches] > 0.4).all()
        assert empty.any()  # every frame leaves some background


def test_phrase_targets_point_at_the_named_colour_and_kind_only():
    ring = syn.shape_mask("ring", 60, 112, 34)
    bar = syn.shape_mask("bar", 170, 112, 34)
    shapes = [[("red", "ring", _cover(ring) > 0.4), ("blue", "bar", _cover(bar) > 0.4)],
              [("blue", "ring", _cover(ring) > 0.4)], []]
    background = np.stack([_cover(ring | bar) < 0.05, _cover(ring) < 0.05, np.ones(256, dtype=bool)])
    data = g.PhraseFrames(torch.zeros(3, 257, 8), shapes, background)
    target, shown = g.phrase_targets(data, [0, 1, 2], "red", "ring")
    assert shown.tolist() == [True, False, False]
    assert torch.allclose(target.sum(-1), torch.ones(3))
    assert ((target[0] > 0).numpy() == (_cover(ring) > 0.4)).all()  # the red ring's patches, not the bar's
    assert target[1][torch.from_numpy(_cover(ring) >= 0.05)].sum() == 0  # a blue ring: the background instead
    assert data.index() == {("red", "ring"): [0], ("blue", "bar"): [0], ("blue", "ring"): [1]}


def test_a_batch_holds_the_hard_negatives():
    rng = np.random.default_rng(0)
    index = {("red", "ring"): list(range(0, 10)), ("blue", "ring"): list(range(10, 20)),
             ("red", "bar"): list(range(20, 30)), ("blue", "bar"): list(range(30, 40))}
    for _ in range(20):
        color, kind, chosen, partners = g.pick_batch(rng, index, 40, 16)
        assert partners == {}
        assert len(chosen) == 16
        shows = lambda c, k: sum(i in index[(c, k)] for i in chosen[:12])  # noqa: E731
        other_c = "blue" if color == "red" else "red"
        other_k = "bar" if kind == "ring" else "ring"
        assert (shows(color, kind), shows(other_c, kind), shows(color, other_k)) == (4, 4, 4)



def test_lures_hold_the_colour_and_the_kind_apart_in_a_frame_or_in_a_summary():
    # frames 0-9 a red ring; 10-19 a blue ring; 20-29 a red bar; 30-34 a red bar beside a blue ring
    index = {("red", "ring"): list(range(0, 10)), ("blue", "ring"): list(range(10, 20)) + list(range(30, 35)),
             ("red", "bar"): list(range(20, 35)), ("blue", "bar"): list(range(35, 40))}
    rng = np.random.default_rng(1)
    for _ in range(20):
        color, kind, chosen, partners = g.pick_batch(rng, index, 40, 16, lures=0.25)
        if (color, kind) != ("red", "ring"):
            continue
        assert len(chosen) == 16
        lures = chosen[12:16]
        in_one_frame = [i for n, i in enumerate(lures) if 12 + n not in partners]
        assert in_one_frame and all(30 <= i < 35 for i in in_one_frame)  # both halves, never together
        assert partners and set(partners) <= {12, 13, 14, 15}
        for n, partner in partners.items():
            assert chosen[n] in index[("blue", "ring")] and partner in index[("red", "bar")]
        break
    else:
        raise AssertionError("no batch for 'red ring' drawn")
    # the partner is a run of the summary; the named shape is nowhere in it, so the target is the background
    shapes = [[("red", "ring", np.ones(256, dtype=bool))], [("blue", "ring", np.eye(256, dtype=bool)[0])],
              [("red", "bar", np.eye(256, dtype=bool)[1])]]
    background = np.stack([np.zeros(256, dtype=bool), ~np.eye(256, dtype=bool)[0], ~np.eye(256, dtype=bool)[1]])
    feats = torch.arange(3.0)[:, None, None].expand(3, 257, 4).contiguous()  # frame k: every value k
    data = g.PhraseFrames(feats, shapes, background)
    pictures, target, shown = g.summary_pictures(data, [1], 2, "red", "ring", np.random.default_rng(0), 4,
                                                 partners={0: 2})
    assert sorted(set(pictures[0, 1:, 0].tolist())) == [1.0, 2.0]  # the blue ring's run and the red bar's
    assert shown.tolist() == [False]
    assert not g.pick_batch(np.random.default_rng(1), index, 40, 16)[3]  # no lures asked: none


def moved_only_what_the_phrases_train(before: dict, model) -> set[str]:
    """The weights of ``model`` that differ from ``before`` (a state dict): some, and only among those the phrases
    step trains (``grounding.trained_parameters``)."""
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trained = {n for n, p in model.named_parameters() if any(p is q for q in g.trained_parameters(model))}
    assert changed and changed <= trained
    return changed


def test_the_phrase_stage_trains_only_what_decides_the_attention(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)  # the fixture is shared: train a copy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = g.train_phrases(model, steps=3, frames=24, batch=8, seed=1)
    assert len(losses) == 3 and all(np.isfinite(losses))
    changed = moved_only_what_the_phrases_train(before, model)
    assert any(k.startswith("qformer.") for k in changed) and any("key_projector" in k for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # left as it came (all trainable)


def test_the_keep_term_is_zero_for_the_model_as_it_came_and_grows_as_its_attention_moves(tiny_model):
    import copy

    feats = torch.randn(4, 257, tiny_model.config.mm_hidden_size)
    text = syn.question_texts()[0]
    assert float(g.keep_loss(tiny_model, tiny_model, text, feats, long_video=False)) == 0.0
    moved = copy.deepcopy(tiny_model)
    with torch.no_grad():
        moved.tokens.key_projector.weight.add_(0.05 * torch.randn_like(moved.tokens.key_projector.weight))
    before = g.phrase_logits(tiny_model, text, feats).float()
    now = g.phrase_logits(moved, text, feats).float()
    expected = float(((now - before) ** 2).mean() / before.var())  # the scores' squared error over their variance
    assert abs(float(g.keep_loss(moved, tiny_model, text, feats, long_video=False)) - expected) < 1e-5 * expected


def test_the_ranking_term_orders_the_pictures_that_show_the_phrase_first():
    logits = torch.zeros(3, 2, 4)
    logits[0] += 3.0  # shown, scores high
    logits[1] += 1.0  # not shown, scores lower
    shown = torch.tensor([True, False, False])
    score = logits.logsumexp(-1).mean(-1)
    expected = float(torch.nn.functional.softplus(score[1:] - score[0]).mean())
    assert abs(float(g.ranking_loss(logits, shown)) - expected) < 1e-6
    worse = logits.clone()
    worse[0] -= 4.0  # now below both
    assert float(g.ranking_loss(worse, shown)) > float(g.ranking_loss(logits, shown))
    assert float(g.ranking_loss(logits, torch.tensor([False, False, False]))) == 0.0


def test_the_lures_step_goes_on_from_the_phrases_step_in_the_same_layout(tiny, tmp_path):
    """The recipe's phrases step, then its lures step from the phrases step's checkpoint (``phrase_stage`` twice,
    as ``train_demo`` runs them): each writes a checkpoint in the layout it read, the lures step moves only the
    attention's weights, and a step whose checkpoint is already there is skipped (a resumed run)."""
    import shutil

    import llamavid

    start = tmp_path / "stage3"  # a stage's checkpoint: its vision encoder beside the weights
    shutil.copytree(tiny.path, start)
    shutil.copyfile(tiny.vision_path, start / g.VISION_TOWER_NAME)
    phrases = g.phrase_stage(start, tmp_path / "phrases", steps=2, frames=24, batch=8, seed=1)
    lures = g.phrase_stage(phrases, tmp_path / "lures", steps=2, frames=24, batch=8, seed=1, lr=3e-4, lures=0.25)
    a = llamavid.load_model(str(phrases), device="cpu", dtype="float32")
    b = llamavid.load_model(str(lures), device="cpu", dtype="float32")
    moved_only_what_the_phrases_train(a.state_dict(), b)
    written = (lures / "model.safetensors").stat().st_mtime_ns
    assert g.phrase_stage(phrases, tmp_path / "lures", steps=2, frames=24, batch=8, seed=1, lures=0.25) == lures
    assert (lures / "model.safetensors").stat().st_mtime_ns == written
