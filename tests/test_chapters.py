"""Chapter boundaries from stored features (``tasks/chapters.py``): the rule on made-up features, then on
videos encoded by the demo model's vision encoder (the example three-shapes clip, a new object on the
same backdrop, a still video, slow motion). Boundary finding only: no LLM, no titles (test_evidence.py
runs ``summarize --chapters`` through the CLI)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from llamavid.data import synthetic
from llamavid.tasks.chapters import GRID, change_scores, find_boundaries, frame_vectors, pool_cells

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cut_times(timestamps, bounds) -> list[float]:
    return [float((timestamps[i - 1] + timestamps[i]) / 2) for i in bounds]


# ---------------------------------------------------------------------------------------------------------
# the content clips (synthetic.content_clip)


def test_content_clips_change_what_is_on_one_backdrop():
    clips = synthetic.make_extra_clips("train", "content", 20, part_seconds=(12.0, 24.0))
    for clip in clips:
        assert clip.kind == "content" and not clip.scenes and 3 <= len(clip.events) <= 6
        changes = synthetic.content_changes(clip)
        assert changes == [e.start for e in clip.events[1:]]  # by default each part is a new shape, alone
        assert all(a.end == b.start and a.color != b.color for a, b in zip(clip.events, clip.events[1:]))
        assert all(round(c * 10) == c * 10 for c in changes)  # any tenth of a second
    mixed = synthetic.make_extra_clips("train", "content", 20, changes=synthetic.CONTENT_CHANGES)
    on_screen = [sum(e.start <= t < e.end for e in c.events) for c in mixed for t in synthetic.content_changes(c)]
    assert set(on_screen) == {1, 2}  # shapes joined others and left them
    assert all(synthetic.content_changes(c) == synthetic.content_changes(asdict(c)) for c in mixed)
    with pytest.raises(ValueError, match="unknown content changes"):
        synthetic.make_extra_clips("train", "content", 1, changes=("zoom",))


# ---------------------------------------------------------------------------------------------------------
# the rule, on made-up features


def test_cells_pool_the_patch_grid_and_leave_the_class_token_out():
    side, channels = 16, 3
    patches = torch.arange(side * side, dtype=torch.float32).reshape(side, side)  # patch value = its index
    tokens = torch.cat([torch.full((1,), 1e4), patches.flatten()])[None, :, None].repeat(2, 1, channels)
    cells = pool_cells(tokens)
    assert cells.shape == (2, GRID * GRID, channels) and cells.dtype == torch.float32
    step = side // GRID
    expected = patches.reshape(GRID, step, GRID, step).mean(dim=(1, 3)).flatten()  # row-major cells
    assert torch.allclose(cells[0, :, 0], expected)
    # float16 features pool to the same cells (float32 out)
    assert torch.allclose(pool_cells(tokens.half()), cells, rtol=1e-3)
    # a grid the cells do not divide evenly (14 x 14 patches), and tokens that are no grid: one cell, the mean
    assert pool_cells(torch.randn(3, 1 + 14 * 14, 5)).shape == (3, GRID * GRID, 5)
    odd = torch.randn(3, 7, 5)
    assert torch.allclose(pool_cells(odd), odd.mean(dim=1, keepdim=True))


def test_a_change_in_one_cell_counts_and_a_flash_does_not():
    rng = np.random.default_rng(0)
    cells = np.repeat(rng.normal(size=(1, 16, 32)), 60, axis=0) + 0.01 * rng.normal(size=(60, 16, 32))
    cells[30:, 5] += 2.0 * rng.normal(size=32)  # one region of 16 changes at frame 30 and stays changed
    cells[45] += 3.0 * rng.normal(size=(16, 32))  # one frame unlike all the others (a flash)
    scores = change_scores(cells)
    assert scores[30] == scores.max() and scores[30] > 1.0
    assert scores[45] < 0.1 and scores[46] < 0.1
    assert find_boundaries(np.arange(60.0), cells) == [30]
    # averaged over the whole picture, the same change scores far less
    assert change_scores(cells.mean(axis=1))[30] < 0.5 * scores[30]


def test_a_short_clip_can_have_short_chapters_and_a_still_one_has_none():
    rng = np.random.default_rng(1)
    looks = rng.normal(size=(3, 16, 8))
    cells = np.repeat(looks, 3, axis=0)  # 9 frames at 1 frame/s, three looks of 3 s: chapters of 2 s may be
    assert find_boundaries(np.arange(9.0), cells) == [3, 6]
    assert find_boundaries(np.arange(9.0), np.repeat(looks[:1], 9, axis=0)) == []
    assert find_boundaries(np.arange(3600.0), np.ones((3600, 16, 8))) == []


def test_boundaries_of_an_hour_of_features():
    """3,600 frames of 1,408-wide features (the published encoder's width) with a change every 5 minutes: every
    change found, nothing else (how long it takes is benchmarks/chapters.py's to say)."""
    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(12, 1408)).astype(np.float32)
    vectors = np.repeat(scenes, 300, axis=0) + 0.03 * rng.normal(size=(3600, 1408)).astype(np.float32)
    bounds = find_boundaries(np.arange(3600.0), vectors)
    assert bounds == list(range(300, 3600, 300))
    feats = torch.from_numpy(np.repeat(vectors[:64, None, :], 4, axis=1))  # 4 tokens: no grid, one cell
    assert np.allclose(frame_vectors(feats, read_frames=10)[:, 0], vectors[:64], atol=1e-5)
    grid = torch.from_numpy(np.repeat(vectors[:20, None, :], 257, axis=1))  # 1 + 16 x 16 tokens: 4 x 4 cells
    cells = frame_vectors(grid, read_frames=7)
    assert cells.shape == (20, 16, 1408) and np.allclose(cells, vectors[:20, None, :], atol=1e-5)
    assert np.allclose(frame_vectors(grid, [2, 5, 11]), cells[[2, 5, 11]])


# ---------------------------------------------------------------------------------------------------------
# the rule, on videos encoded by the demo model


@pytest.fixture(scope="module")
def encoder():
    from llamavid.model.loading import load_vision_encoder

    return load_vision_encoder("demo", device="cpu", dtype="float32")


def _boundaries(encoder, video: Path, tmp_path: Path) -> tuple[np.ndarray, list[int]]:
    from llamavid.features.encode import EncodeOptions, encode_file
    from llamavid.features.vidtok import open_vidtok

    out = tmp_path / f"{video.stem}.vidtok"
    encode_file(encoder, video, out, EncodeOptions())
    with open_vidtok(out) as vt:
        stamps = np.asarray(vt.timestamps)
        return stamps, find_boundaries(stamps, frame_vectors(vt))


def _write(clip: synthetic.Clip, folder: Path) -> Path:
    return synthetic.write_clip(clip, folder / f"{clip.id}.mp4", seed=synthetic.hash_seed(clip.id))


def _event(shape, color, start, end, p0, p1, r) -> synthetic.ShapeEvent:
    return synthetic.ShapeEvent(shape, color, start, end, p0, p1, r)


def test_the_three_shapes_example_gets_three_chapters(encoder, tmp_path):
    """examples/three-shapes.mp4: three shapes of 2 s, one after another with 1 s between them, on one
    backdrop (9 s at 1 frame/s): one chapter per shape."""
    stamps, bounds = _boundaries(encoder, EXAMPLES / "three-shapes.mp4", tmp_path)
    assert list(stamps) == [float(t) for t in range(9)]
    assert len(bounds) == 2
    first, second = _cut_times(stamps, bounds)
    assert 1 < first < 3 and 4 < second < 6  # between one shape's last frame and the next one's first


def test_a_new_shape_on_the_same_backdrop_starts_a_chapter(encoder, tmp_path):
    """One backdrop: a big yellow bar, then (from 14.3 s) a smaller purple ring elsewhere."""
    bar = _event("bar", "yellow", 0.0, 14.3, (100.0, 120.0), (120.0, 110.0), 60.0)
    ring = _event("ring", "purple", 14.3, 30.0, (150.0, 80.0), (140.0, 96.0), 40.0)
    clip = synthetic.Clip("new-shape", "content", 30.0, 1.0, 60, [bar, ring])
    stamps, bounds = _boundaries(encoder, _write(clip, tmp_path), tmp_path)
    assert [round(t, 1) for t in _cut_times(stamps, bounds)] == [14.5]


def test_a_big_shape_joining_another_starts_a_chapter(encoder, tmp_path):
    """A red circle moves slowly all through; at 12.3 s a big white bar joins it and stays."""
    circle = _event("circle", "red", 0.0, 30.0, (70.0, 70.0), (80.0, 64.0), 30.0)
    bar = _event("bar", "white", 12.3, 30.0, (120.0, 150.0), (128.0, 140.0), 64.0)
    clip = synthetic.Clip("big-joins", "content", 30.0, 1.0, 60, [circle, bar])
    stamps, bounds = _boundaries(encoder, _write(clip, tmp_path), tmp_path)
    assert [round(t, 1) for t in _cut_times(stamps, bounds)] == [12.5]


SMALLER_JOINS = {  # (the shape on screen all through, the one that joins at 12.3 s)
    "small dot (0.32)": (("ring", "white", (104.0, 112.0), (120.0, 112.0), 56.0),
                         ("circle", "red", (52.0, 52.0), (56.0, 50.0), 22.0)),
    "medium bar (0.38)": (("ring", "white", (104.0, 112.0), (120.0, 112.0), 56.0),
                          ("bar", "blue", (64.0, 170.0), (70.0, 160.0), 44.0)),
}
# the change stays under MIN_CHANGE at 4 x 4 cells (the small dot's did too with the encoder shipped before)
UNDER_MIN_CHANGE = pytest.mark.xfail(reason="a smaller shape joining a big one changes the demo encoder's features "
                                            "(whose tokens carry mostly the whole picture) less than MIN_CHANGE at "
                                            "4 x 4 cells; see chapters.py")


@pytest.mark.parametrize("case", [pytest.param(name, marks=UNDER_MIN_CHANGE) if name.startswith("medium") else name
                                  for name in sorted(SMALLER_JOINS)])
def test_a_smaller_shape_joining_a_big_one_starts_a_chapter(encoder, tmp_path, case):
    (shape, color, p0, p1, r), (shape2, color2, q0, q1, r2) = SMALLER_JOINS[case]
    big = _event(shape, color, 0.0, 30.0, p0, p1, r)
    joins = _event(shape2, color2, 12.3, 30.0, q0, q1, r2)
    clip = synthetic.Clip("smaller-joins", "content", 30.0, 1.0, 60, [big, joins])
    stamps, bounds = _boundaries(encoder, _write(clip, tmp_path), tmp_path)
    assert [round(t, 1) for t in _cut_times(stamps, bounds)] == [12.5]


def test_a_still_video_gets_no_chapters(encoder, tmp_path):
    still = _event("bar", "blue", 0.0, 40.0, (112.0, 112.0), (112.0, 112.0), 60.0)
    clip = synthetic.Clip("still", "content", 40.0, 1.0, 40, [still])
    stamps, bounds = _boundaries(encoder, _write(clip, tmp_path), tmp_path)
    assert len(stamps) == 40 and bounds == []


def test_slow_motion_gets_no_chapters(encoder, tmp_path):
    """Two minutes of one shape drifting 40 px (and a second, smaller one drifting the other way)."""
    big = _event("circle", "green", 0.0, 120.0, (92.0, 112.0), (132.0, 112.0), 56.0)
    small = _event("column", "yellow", 0.0, 120.0, (180.0, 170.0), (150.0, 180.0), 24.0)
    clip = synthetic.Clip("slow", "content", 120.0, 1.0, 70, [big, small])
    stamps, bounds = _boundaries(encoder, _write(clip, tmp_path), tmp_path)
    assert len(stamps) == 120 and bounds == []


# ---------------------------------------------------------------------------------------------------------
# the held-out report (pointing_eval): one row per set


def test_the_chapter_report_has_a_row_per_set():
    from llamavid.train.pointing_eval import CHAPTER_SETS, render, true_changes

    row = {"clips": 30, "changes": 100, "boundaries": 99, "recall": 98.0, "precision": 99.0, "exact_clips": 90.0,
           "mean_error": 0.25, "seconds_per_clip": 0.002}
    lines = render({"chapters": {name: row for name in CHAPTER_SETS}})
    rows = [line for line in lines if line.startswith("| ") and "98.0%" in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [CHAPTER_SETS[name][3] for name in CHAPTER_SETS]
    assert "| 30, 100 | 98.0% | 99.0% | 90.0% | 0.25 s | 2.0 ms |" in rows[0]
    old = render({"chapters": row})  # a results file from before the content sets
    assert any(line.startswith(f"| {CHAPTER_SETS['scenes'][3]} |") for line in old)
    scene = asdict(synthetic.make_extra_clips("test", "scenes", 1)[0])
    assert true_changes(scene) == [start for start, _ in scene["scenes"][1:]]
    content = asdict(synthetic.make_extra_clips("test", "content", 1)[0])
    assert true_changes(content) == [e["start"] for e in content["events"][1:]]
