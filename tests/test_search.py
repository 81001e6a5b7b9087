"""llamavid search: ranking across a library, the JSONL records, --top, the model's check, --answer, the search
index (built, reused, stale, damaged, re-encoded), files left out, encoders that cannot be mixed."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import torch
from conftest import model_args, run_cli
from media import make_video, write_srt

import llamavid
from llamavid.core.callbacks import Callbacks
from llamavid.core.errors import InputError, OptionError, VidtokError
from llamavid.core.options import SearchOptions
from llamavid.data import synthetic as syn
from llamavid.features.search_index import (
    IndexSettings,
    build_index,
    index_path_for,
    read_index,
    runs_of,
    stretches_of,
)
from llamavid.features.vidtok import open_vidtok, write_vidtok
from llamavid.tasks.search import library_files, query_terms, search

CODE = "the code word tiger"
WIDTH = 176  # the tiny checkpoint's vision width


def vidtok(path, model, *, frames=30, seed=0, subtitles=(), fingerprint=None, change_every=5):
    """A .vidtok of the tiny model's encoder: content that changes every ``change_every`` frames."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randn(-(-frames // change_every), 257, WIDTH, generator=g)
    features = blocks.repeat_interleave(change_every, 0)[:frames]
    encoder = dict(model.vision_identity())
    if fingerprint is not None:
        encoder["fingerprint"] = fingerprint
    return write_vidtok(path, features, [float(t) for t in range(frames)], encoder=encoder, fps=1.0,
                        source={"name": path.name, "size": None, "duration": float(frames),
                                "content_hash": f"s1:{seed}"},
                        subtitles=list(subtitles))


@pytest.fixture
def library(tmp_path, tiny_model):
    """Three files; one subtitle line names the code word (b.vidtok, 12-14 s), the others say other things."""
    folder = tmp_path / "lib"
    folder.mkdir()
    vidtok(folder / "a.vidtok", tiny_model, seed=1, subtitles=[(3.0, 5.0, "Remember the code word."),
                                                               (20.0, 22.0, "Watch the shapes.")])
    vidtok(folder / "b.vidtok", tiny_model, seed=2, subtitles=[(2.0, 4.0, "The code word comes later."),
                                                               (12.0, 14.0, "The code word is tiger.")])
    (folder / "sub").mkdir()
    vidtok(folder / "sub" / "c.vidtok", tiny_model, seed=3, subtitles=[(8.0, 10.0, "Now watch this.")])
    return folder


def best_runs_by_hand(library, model, query) -> dict[tuple[str, float], float]:
    """Per stretch of the library's sidecars, by (file name, start): the best of its runs' scores, each run's
    picture assembled here from the sidecar's arrays (its class token, then its pooled patches), the maximum of
    the attention's log-sum-exp."""
    from llamavid.pipeline.planning import resolve_long_video

    long_video = resolve_long_video(model, None)
    out = {}
    for path in library.rglob("*.vidtok"):
        index = read_index(index_path_for(path))
        with open_vidtok(path) as vt:
            times = vt.timestamps
        for s, (a, _) in enumerate(index.stretches):
            rows = range(index.offsets[s], index.offsets[s + 1])
            pictures = torch.stack([torch.cat([torch.from_numpy(index.cls[r][None].astype(np.float32)),
                                               torch.from_numpy(index.patches[r].astype(np.float32))]) for r in rows])
            lse = model.context_relevance(pictures, query, long_video=long_video)["lse"]
            out[(path.name, float(times[a]))] = float(lse.max())
    return out


def hits(moment, name, start, end) -> bool:
    return moment.video.endswith(name) and moment.start < end and moment.end > start


# -- ranking -------------------------------------------------------------------------------------------------


def test_the_moment_whose_lines_say_the_query_ranks_first_across_the_library(library, tiny_model):
    result = search(tiny_model, [library], CODE, SearchOptions(top=3, rerank=0))
    assert result.files == 3 and len(result.moments) == 3
    assert hits(result.moments[0], "b.vidtok", 12, 14), result.moments
    scores = [m.score for m in result.moments]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert result.moments[0].score > result.moments[1].score
    assert result.stretches == sum(len(read_index(index_path_for(p))) for p in library.rglob("*.vidtok"))


def test_the_best_stretches_are_looked_at_closer_on_every_stored_frame(library, tiny_model):
    """``closer``: the first stage's best n stretches are ranked again by their best stored frame's attention
    (recomputed here from each .vidtok), above the rest, which keep their order (``closer_mix`` 0: the stored
    frames alone; with the first stage mixed in: the next test)."""
    from llamavid.pipeline.planning import resolve_long_video

    query, n = "a purple ring", 6  # no line says it: the pictures alone rank
    coarse = search(tiny_model, [library], query, SearchOptions(top=40, closer=0, rerank=0))
    closer = search(tiny_model, [library], query, SearchOptions(top=40, closer=n, rerank=0), closer_mix=0.0)
    assert "closer" in closer.seconds and "closer" not in coarse.seconds
    key = lambda m: (m.video, m.start, m.end)  # noqa: E731

    def best_frame(m) -> float:
        with open_vidtok(m.file.path) as vt:
            inside = [i for i, t in enumerate(vt.timestamps) if m.start <= t < m.end]
            scores = tiny_model.context_relevance(vt, query, frame_indices=inside,
                                                  long_video=resolve_long_video(tiny_model, None))["lse"]
        return float(scores.max())

    assert sorted(map(key, closer.moments[:n])) == sorted(map(key, coarse.moments[:n]))
    looked = [best_frame(m) for m in closer.moments[:n]]
    assert looked == sorted(looked, reverse=True) and len(set(looked)) == n
    assert [key(m) for m in closer.moments[n:]] == [key(m) for m in coarse.moments[n:]]
    assert [key(m) for m in closer.moments[:n]] != [key(m) for m in coarse.moments[:n]]  # it did reorder them
    with pytest.raises(OptionError, match="closer"):
        SearchOptions(closer=-1)


def test_the_best_run_of_a_stretch_in_the_first_stage_or_mixed_into_the_closer_look(library, tiny_model):
    """A stretch's *best run*: each summary frame of the index a picture of its own (its class token and its
    pooled patches, assembled here from the sidecar's arrays), the best one's score. ``stretch_score="parts"``
    ranks the first stage by it; the closer look ranks by z(best stored frame) + mix z(best run)."""
    from llamavid.pipeline.planning import resolve_long_video

    query, n, mix = "a purple ring", 6, 0.5  # no line says it: the pictures alone rank
    long_video = resolve_long_video(tiny_model, None)
    first = search(tiny_model, [library], query, SearchOptions(top=40, closer=0, rerank=0), stretch_score="parts")
    by_hand = {k: v - math.log(16) for k, v in best_runs_by_hand(library, tiny_model, query).items()}
    got = [by_hand[(os.path.basename(m.video), m.start)] for m in first.moments]
    assert len(got) == len(by_hand) and got == sorted(got, reverse=True)
    assert len(set(got)) > len(got) // 2  # the scores differ: the order says something

    def best_frame(m) -> float:
        with open_vidtok(m.file.path) as vt:
            inside = [i for i, t in enumerate(vt.timestamps) if m.start <= t < m.end]
            scores = tiny_model.context_relevance(vt, query, frame_indices=inside, long_video=long_video)["lse"]
        return float(scores.max())

    z = lambda x: (np.asarray(x) - np.mean(x)) / np.std(x)  # noqa: E731
    for stage1 in ("whole", "parts"):  # the default first stage, and the best run's own
        coarse = search(tiny_model, [library], query, SearchOptions(top=40, closer=0, rerank=0), stretch_score=stage1)
        mixed = search(tiny_model, [library], query, SearchOptions(top=40, closer=n, rerank=0), stretch_score=stage1,
                       closer_mix=mix)
        top = coarse.moments[:n]
        value = z([best_frame(m) for m in top]) + mix * z([by_hand[(os.path.basename(m.video), m.start)] for m in top])
        expected = [(top[i].video, top[i].start) for i in np.argsort(-value, kind="stable")]
        assert [(m.video, m.start) for m in mixed.moments[:n]] == expected
        assert [(m.video, m.start) for m in mixed.moments[n:]] == [(m.video, m.start) for m in coarse.moments[n:]]
    with pytest.raises(InputError, match="stretch_score"):
        search(tiny_model, [library], query, stretch_score="frames")
    with pytest.raises(InputError, match="closer_mix"):
        search(tiny_model, [library], query, closer_mix=float("nan"))


def test_the_closer_look_takes_best_runs_from_the_first_stage_and_reads_no_index_twice(library, tiny_model,
                                                                                      monkeypatch):
    """The best runs the closer look mixes in are scored while the first stage holds each file's index: every
    index is read once per search, whether the query's words match lines or not. A stretch the first stage
    left without one (here: all of them) has its file's index read again in the closer look, with the same
    ranking (``best_runs`` 0: the first stage's own use of best runs is off in both)."""
    import llamavid.tasks.search as search_module

    reads = []
    real = search_module.index_for

    def counted(*args, **kwargs):
        reads.append(kwargs.get("label"))
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "index_for", counted)
    options = SearchOptions(top=40, closer=8, rerank=0)
    for query in ("a purple ring", "the code word"):
        reads.clear()
        assert search(tiny_model, [library], query, options).files == 3 == len(reads)  # the default
        eager = search(tiny_model, [library], query, options, best_runs=0)
        assert len(reads) == 6
        monkeypatch.setattr(search_module._Library, "runs_now", lambda self, *a: [])
        reads.clear()
        lazy = search(tiny_model, [library], query, options, best_runs=0)
        monkeypatch.undo()
        monkeypatch.setattr(search_module, "index_for", counted)
        assert len(reads) == 3 + len({m.video for m in lazy.moments[:8]})  # read again for the closer look
        assert [(m.video, m.start) for m in eager.moments] == [(m.video, m.start) for m in lazy.moments]
        assert [m.score for m in eager.moments] == pytest.approx([m.score for m in lazy.moments], abs=1e-9)


def test_the_best_stretches_by_summary_are_ranked_again_by_their_best_run(library, tiny_model):
    """``best_runs`` n: the library's best n stretches by their whole summary are ranked again among themselves
    by their best run (computed here by hand from the sidecars), taking the same places' scores; the others
    keep their order and scores."""
    query, n = "a purple ring", 4  # no line says it: the pictures alone rank
    options = SearchOptions(top=40, closer=0, rerank=0)
    plain = search(tiny_model, [library], query, options, best_runs=0).moments  # builds the indexes
    best_run = best_runs_by_hand(library, tiny_model, query)
    again = search(tiny_model, [library], query, options, best_runs=n).moments
    key = lambda m: (os.path.basename(m.video), m.start)  # noqa: E731
    chosen = {key(m) for m in plain[:n]}
    assert len(plain) == len(again) == len(best_run) > n
    assert [key(m) for m in again if key(m) in chosen] == sorted(chosen, key=lambda k: -best_run[k])
    assert [key(m) for m in again if key(m) not in chosen] == [key(m) for m in plain[n:]]
    assert [m.score for m in again if key(m) not in chosen] == [m.score for m in plain[n:]]
    assert sorted(m.score for m in again if key(m) in chosen) == pytest.approx(sorted(m.score for m in plain[:n]))
    assert [key(m) for m in again] != [key(m) for m in plain]  # it did reorder them
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="best_runs"):
            search(tiny_model, [library], query, best_runs=bad)


def test_the_first_stage_keeps_the_best_runs_only_of_stretches_that_may_need_them():
    """``_Library.runs_now``: the stretches among the best ``runs`` raw visual scores seen so far (a running
    top), and of those a line matches the ``matched`` holding the most query terms. Over stretches streaming
    past in random order about ``runs * ln(n / runs)`` are chosen, and every one of the final best ``runs``."""
    from llamavid.tasks.search import _Library

    rng = np.random.default_rng(0)
    library, chosen, everything = _Library(["a", "b"], keep=10, runs=5), [], []
    for f in range(200):
        visual, terms = rng.normal(size=20), np.zeros(20, dtype=np.int64)
        now = library.runs_now(visual, terms)
        assert now == sorted(now)
        chosen += [(f, s) for s in now]
        everything += [(float(visual[s]), (f, s)) for s in range(20)]
    assert {key for _, key in sorted(everything, reverse=True)[:5]} <= set(chosen)
    assert len(chosen) < 5 * (1 + math.log(len(everything) / 5)) * 1.5  # about 5 ln(n / 5), not n
    assert _Library(["a"], keep=3).runs_now(np.ones(4), np.zeros(4, dtype=np.int64)) == []
    few = _Library(["a", "b"], keep=3, runs=1, matched=2)
    assert few.runs_now(np.asarray([0.0, 5.0, 1.0, 2.0, 9.0]), np.asarray([1, 3, 2, 3, 0])) == [1, 3, 4]


def test_the_first_stage_attention_reads_the_visual_text_around_the_query(library, tiny_model, monkeypatch):
    import llamavid.tasks.search as search_module

    read = []
    real = search_module.token_scores
    monkeypatch.setattr(search_module, "token_scores", lambda model, pictures, text, *a, **k: (
        read.append(text), real(model, pictures, text, *a, **k))[1])
    search(tiny_model, [library], " a purple ring ", SearchOptions(top=3, rerank=0))
    assert set(read) == {search_module.VISUAL_TEXT.format(query="a purple ring")}
    read.clear()
    plain = search(tiny_model, [library], "a purple ring", SearchOptions(top=3, rerank=0), visual_text="{query}")
    asked = search(tiny_model, [library], "a purple ring", SearchOptions(top=3, rerank=0),
                   visual_text=search_module.CHECK_PROMPT)
    assert read[0] == "a purple ring" and read[-1] == search_module.CHECK_PROMPT.format(query="a purple ring")
    assert [m.first for m in plain.moments] != [m.first for m in asked.moments]  # the text is what is read
    for bad in ("{query} {other}", "{0}", "{query"):
        with pytest.raises(InputError, match="visual_text"):
            search(tiny_model, [library], "a purple ring", visual_text=bad)


def test_query_words_leave_out_stop_words_and_keep_the_rest():
    assert query_terms("Where does the professor derive the Fourier transform?") == ["professor", "derive", "fourier",
                                                                                    "transform"]
    assert query_terms("the") == ["the"]  # nothing else: every word counts
    assert query_terms("Größe, GRÖSSE größe") == ["grösse"]  # case folded: one word


def test_moments_are_stretches_of_at_most_ten_seconds_cut_where_the_content_changes():
    distances = np.zeros(29)
    distances[[4, 9, 14, 19, 24]] = 0.5  # content changes every 5 frames
    runs = runs_of(distances, 0.02)
    assert runs == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30)]
    groups = stretches_of(runs, np.arange(30.0), 1.0, IndexSettings(max_seconds=10, max_parts=3))
    assert [(g[0][0], g[-1][1]) for g in groups] == [(0, 10), (10, 20), (20, 30)]
    one_long_run = stretches_of([(0, 25)], np.arange(25.0), 1.0, IndexSettings(max_seconds=10))
    assert [(g[0][0], g[-1][1]) for g in one_long_run] == [(0, 10), (10, 20), (20, 25)]


# -- the command line ------------------------------------------------------------------------------------------


def test_jsonl_records_and_top(capsys, library, tiny):
    code, out, err = run_cli(capsys, "search", library, CODE, "--top", "2", "--rerank", "0", "--json",
                             *model_args(tiny))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2
    assert all(set(r) == {"video", "start", "end", "score"} for r in records)
    assert records[0]["video"] == os.fspath(library / "b.vidtok") and records[0]["start"] < 14 < records[0]["end"] + 2
    assert "2 moments from 3 files" in err


def test_terminal_lines_name_the_video_the_times_and_the_score(capsys, library, tiny):
    code, out, err = run_cli(capsys, "search", library / "b.vidtok", library / "a.vidtok", CODE, "--top", "1",
                             "--rerank", "0", *model_args(tiny))
    assert code == 0, err
    assert re.fullmatch(r"\S+b\.vidtok  00:00:1\d-00:00:\d\d  [01]\.\d\d\n", out), out


def test_a_video_is_encoded_through_the_cache_and_searched_by_its_subtitles(capsys, tmp_path, tiny, tiny_model):
    folder = tmp_path / "talks"  # not tmp_path itself: the tests' llamavid cache lives there
    folder.mkdir()
    video = make_video(folder / "talk.mp4", seconds=6, fps=4)
    write_srt(folder / "talk.srt", [(2.0, 3.5, "The code word is tiger.")])
    vidtok(folder / "other.vidtok", tiny_model, frames=12, seed=5, subtitles=[(1.0, 2.0, "Remember the code word.")])
    result = search(tiny_model, [video, folder / "other.vidtok"], CODE, SearchOptions(top=2, rerank=0))
    assert result.moments[0].video == os.fspath(video) and result.moments[0].start < 3.5
    assert result.indexes == {"built": 2}  # the video's cached .vidtok gets its index too
    again = search(tiny_model, [folder], CODE, SearchOptions(top=1, rerank=0))  # the folder: video and .vidtok
    assert again.indexes == {"used": 2} and again.files == 2


# -- the second stage and answers ------------------------------------------------------------------------------


def test_the_model_checks_the_best_candidates_and_the_score_mixes_both(library, tiny_model):
    result = search(tiny_model, [library], CODE, SearchOptions(top=3, rerank=4))
    assert "rerank" in result.seconds
    checked = [m for m in result.moments if m.check is not None]
    assert len(checked) == 3
    for m in checked:
        g = 0.5 * (1 - m.first)  # the check's share: the first stage's doubt
        assert 0 <= m.check <= 1 and m.score == pytest.approx((1 - g) * m.first + g * m.check)
    assert result.moments[0].first > 0.99 and hits(result.moments[0], "b.vidtok", 12, 14)  # sure: kept first
    first_only = search(tiny_model, [library], CODE, SearchOptions(top=3, rerank=4, rerank_weight=0.0))
    assert [m.first for m in first_only.moments] == sorted((m.first for m in first_only.moments), reverse=True)


def test_answer_asks_the_query_on_each_moment(capsys, library, tiny):
    code, out, err = run_cli(capsys, "search", library, CODE, "--top", "2", "--rerank", "0", "--answer", "--json",
                             *model_args(tiny, max_new=3))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and all(isinstance(r["answer"], str) for r in records)


def test_answer_records_carry_the_moment_as_the_range(library, tiny_model):
    ask = llamavid.AskOptions(temperature=0, max_new_tokens=2)
    result = search(tiny_model, [library], CODE, SearchOptions(top=1, rerank=0, answer=True, ask=ask))
    m = result.moments[0]
    assert m.answer is not None and m.answer.frames <= math.ceil(m.end - m.start)


# -- the index ---------------------------------------------------------------------------------------------------


def test_the_index_is_built_once_reused_and_rebuilt_when_the_vidtok_is_encoded_again(library, tiny_model):
    target = library / "b.vidtok"
    first = search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0))
    assert first.indexes == {"built": 1} and index_path_for(target).is_file()
    assert search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0)).indexes == {"used": 1}
    old = read_index(index_path_for(target))
    vidtok(target, tiny_model, seed=9, subtitles=[(12.0, 14.0, "The code word is tiger.")], change_every=3)
    again = search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0))
    assert again.indexes == {"rebuilt": 1}
    new = read_index(index_path_for(target))
    with open_vidtok(target) as vt:
        assert new.identity == vt.identity != old.identity
    assert len(new) != len(old) or not np.array_equal(new.stretches, old.stretches)


def test_a_damaged_index_is_named_and_made_again(library, tiny_model):
    target = library / "a.vidtok"
    search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0))
    path = index_path_for(target)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(VidtokError, match="fails its checksums"):
        read_index(path)
    warnings: list[str] = []
    result = search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0),
                    callbacks=Callbacks(warning=warnings.append))
    assert result.indexes == {"rebuilt": 1} and read_index(path).identity
    assert any("a.vidtok.index" in w and "checksum" in w for w in warnings), warnings


def test_an_index_of_other_settings_is_stale(library, tiny_model):
    target = library / "sub" / "c.vidtok"
    search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0))
    result = search(tiny_model, [target], CODE, SearchOptions(top=1, rerank=0),
                    index_settings=IndexSettings(grid=2))
    assert result.indexes == {"rebuilt": 1} and read_index(index_path_for(target)).settings.grid == 2


def test_the_index_round_trips_and_is_much_smaller_than_the_features(library):
    with open_vidtok(library / "b.vidtok") as vt:
        index = build_index(vt)
        assert index.identity == vt.identity and index.num_frames == 30
        assert index.nbytes * 10 < vt.path.stat().st_size
        assert index.summaries(np.arange(len(index))).shape[1] == 1 + int(index.parts()[0]) * 16


# -- bad input ----------------------------------------------------------------------------------------------------


def test_a_damaged_or_foreign_file_among_good_ones_is_named_and_skipped(library, tiny_model):
    (library / "junk.vidtok").write_bytes(b"not a vidtok at all" * 10)
    good = (library / "a.vidtok").read_bytes()
    (library / "cut.vidtok").write_bytes(good[: len(good) // 2])
    bad_block = bytearray((library / "sub" / "c.vidtok").read_bytes())
    bad_block[-100] ^= 0xFF  # a byte of the features: found when the index reads them
    (library / "sub" / "c.vidtok").write_bytes(bytes(bad_block))
    warnings: list[str] = []
    result = search(tiny_model, [library], CODE, SearchOptions(top=2, rerank=0),
                    callbacks=Callbacks(warning=warnings.append))
    assert hits(result.moments[0], "b.vidtok", 12, 14) and result.files == 2
    assert any("junk.vidtok: skipped" in w for w in warnings)
    assert any("cut.vidtok: skipped" in w and "truncated" in w for w in warnings)
    assert any("c.vidtok: skipped" in w and "checksum" in w for w in warnings), warnings
    assert sorted(result.skipped) == sorted(warnings)  # the result lists them too
    assert not index_path_for(library / "sub" / "c.vidtok").exists()  # a damaged file is never indexed


def test_files_of_another_vision_encoder_are_refused_with_the_reason(library, tiny_model):
    vidtok(library / "foreign.vidtok", tiny_model, seed=4, fingerprint="eva-something-else")
    with pytest.raises(VidtokError, match="foreign.vidtok: made with vision encoder eva-something-else.*cannot be "
                                          "searched together"):
        search(tiny_model, [library], CODE)
    assert not index_path_for(library / "a.vidtok").exists()  # refused before any work


def test_empty_folder_empty_query_and_bad_options_are_refused(tmp_path, library, tiny_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: holds no .vidtok files or videos"):
        library_files([tmp_path / "empty"])
    with pytest.raises(InputError, match="the query is empty"):
        search(tiny_model, [library], "  ")
    with pytest.raises(InputError, match="the query holds nothing visible"):
        search(tiny_model, [library], " \u200b ")
    assert not index_path_for(library / "a.vidtok").exists()  # refused before any work
    for bad in ({"top": 0}, {"top": "5"}, {"rerank": -1}, {"rerank_weight": float("nan")}, {"rerank_weight": 2},
                {"answer": "yes"}):
        with pytest.raises(OptionError):
            SearchOptions(**bad)
    with pytest.raises(InputError, match="start"):
        SearchOptions(ask=llamavid.AskOptions(start=3))
    (tmp_path / "one.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello.\n")
    with pytest.raises(InputError, match="does not apply to a search: each video's own subtitles"):
        SearchOptions(ask=llamavid.AskOptions(subtitles=str(tmp_path / "one.srt")))
    assert SearchOptions(ask=llamavid.AskOptions(subtitles="none")).ask.subtitles == "none"


# -- the synthetic library ----------------------------------------------------------------------------------------


def test_each_query_of_a_synthetic_library_has_one_right_moment():
    clips, queries = syn.search_library("test", 0, videos=50)
    again, _ = syn.search_library("test", 0, videos=50)
    assert [c.id for c in clips] == [c.id for c in again] and len(queries) == 20
    assert {len(c.events) for c in clips} == {len(c.events) for c in again}
    for q in queries:
        if q.kind == "visual":
            color, kind = q.text.split()[-2:]
            found = [(c.id, e.start, e.end) for c in clips for e in c.events if (e.color, e.shape) == (color, kind)]
        else:
            word = q.text.split()[-1]
            found = [(c.id, s, e) for c in clips for s, e, text in c.subtitles if word in text.split()
                     or f"{word}." in text.split()]
        assert found == [(q.video, q.start, q.end)], q
    assert len({c.seconds for c in clips}) > 10  # mixed lengths


def test_a_video_that_cannot_be_decoded_is_named_and_skipped(library, tiny_model):
    (library / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    warnings: list[str] = []
    result = search(tiny_model, [library], CODE, SearchOptions(top=1, rerank=0),
                    callbacks=Callbacks(warning=warnings.append))
    assert result.files == 3 and hits(result.moments[0], "b.vidtok", 12, 14)
    assert [w for w in warnings if "broken.mp4: skipped: " in w] == result.skipped, warnings


def test_two_searches_at_once_build_each_index_once(library, tiny_model):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: search(tiny_model, [library], CODE, SearchOptions(top=2, rerank=0)),
                                range(2)))
    built = [r.indexes.get("built", 0) for r in results]
    assert sum(built) == 3 and all(r.indexes.get("built", 0) + r.indexes.get("used", 0) == 3 for r in results)
    assert [m.to_json() for m in results[0].moments] == [m.to_json() for m in results[1].moments]
