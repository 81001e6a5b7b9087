"""Look closer: two passes (two plans), the relevance scorers, pass 2's frames, and every front end's switch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import model_args, run_cli
from media import make_video

import llamavid
from llamavid.core.errors import OptionError
from llamavid.core.options import AskOptions, options_from_json
from llamavid.data import synthetic as syn
from llamavid.pipeline.inputs import FeaturesInMemory, FrameView, VideoInput, open_input
from llamavid.pipeline.planning import (
    CloserSettings,
    LookRange,
    closer_ranges,
    closer_times,
    plan_closer,
    plan_question,
)
from llamavid.tasks.qa import Question, answer_questions
from llamavid.tasks.relevance import score_frames

Q = "What color is the ring?"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("closer") / "clip.mp4", seconds=12, fps=4)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("closer-cache")


@pytest.fixture(autouse=True)
def _one_cache(_isolated_cache, shared_cache, monkeypatch):
    monkeypatch.setenv("LLAMAVID_CACHE", str(shared_cache))


def memory_input(n: int = 40, seed: int = 0, width: int = 176) -> VideoInput:
    g = torch.Generator().manual_seed(seed)
    return VideoInput("features", FeaturesInMemory(torch.randn(n, 257, width, generator=g)), [])


# -- the switch, validated once -------------------------------------------------------------------------------


def test_the_switch_is_a_validated_question_option_and_a_batch_field():
    assert AskOptions().look_closer is None and AskOptions(look_closer=True).look_closer is True
    with pytest.raises(OptionError, match="look_closer"):
        AskOptions(look_closer="yes")
    assert options_from_json({"look_closer": False}, AskOptions()).look_closer is False
    with pytest.raises(OptionError, match="look_closer"):
        options_from_json({"look_closer": 1}, AskOptions())


def test_the_http_api_takes_the_switch_as_a_body_field(tmp_path, clip):
    from llamavid.server.media_access import MediaAccess
    from llamavid.server.protocol import parse_chat_request, request_fields

    assert "look_closer" in request_fields()
    body = {"model": "m", "look_closer": True,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip.name}},
                                                      {"type": "text", "text": Q}]}]}
    request = parse_chat_request(body, model_id="m", media=MediaAccess([clip.parent]))
    assert request.question.options.look_closer is True


# -- planning: two plans ----------------------------------------------------------------------------------------


def test_ranges_are_the_best_frames_padded_joined_in_time_order():
    scores = np.zeros(100)
    scores[[10, 12, 60, 90, 30]] = [5.0, 4.0, 3.0, 1.5, 1.0]
    times = np.arange(100.0)
    ranges = closer_ranges(scores, times, CloserSettings(ranges=4, pad=2.0), step=1.0, duration=100.0)
    # the best frame (10) is padded to [8, 13); 12 is inside it, so the next best are 60 and 90; 30 is less
    # than a quarter of the way from the median to the best
    assert [(r.start, r.end) for r in ranges] == [(8.0, 13.0), (58.0, 63.0), (88.0, 93.0)]
    assert [r.score for r in ranges] == pytest.approx([1.0, 0.6, 0.3])
    # ranges that overlap are joined: 15 is outside [7, 14), its range [12, 19) overlaps
    scores = np.zeros(100)
    scores[[10, 15]] = [2.0, 1.0]
    joined = closer_ranges(scores, times, CloserSettings(ranges=2, pad=3.0), step=1.0)
    assert [(r.start, r.end, r.score) for r in joined] == [(7.0, 19.0, 1.0)]


def test_pass_two_asks_the_video_for_frames_between_the_stored_ones():
    stored = np.arange(0.0, 20.0)
    wanted = closer_times([LookRange(4.0, 6.0, 1.0)], CloserSettings(fps=4.0), stored, 4.0)
    assert wanted == [4.25, 4.5, 4.75, 5.25, 5.5, 5.75]
    # never denser than the video, and on its frame grid
    assert closer_times([LookRange(4.0, 6.0, 1.0)], CloserSettings(fps=4.0), stored, 2.0) == [4.5, 5.5]
    ntsc = closer_times([LookRange(4.0, 6.0, 1.0)], CloserSettings(fps=4.0), stored, 29.97)
    assert len(ntsc) == 8 and all(abs(t * 29.97 - round(t * 29.97)) < 1e-3 and 4 <= t < 6 for t in ntsc)


def test_the_switch_makes_two_plans_and_off_keeps_the_one(tiny_model):
    vin = memory_input()
    opts = AskOptions(temperature=0, max_new_tokens=4)
    assert plan_question(tiny_model, vin, Q, opts).closer is None  # fits: the default is the plain answer
    assert plan_question(tiny_model, vin, Q, opts.replace(look_closer=False)).closer is None
    default = plan_question(tiny_model, vin, Q, opts.replace(look_closer=True))
    assert default.closer == CloserSettings() and default.frames == 40  # pass 1's plan is the plain one
    wide = CloserSettings(ranges=4, pad=2.0)  # the mechanics, whatever the measured defaults are
    first = plan_question(tiny_model, vin, Q, opts.replace(look_closer=True), closer=wide)
    assert first.closer == wide and first.frames == 40
    scores = np.zeros(40)
    scores[25] = 1.0
    ranges = closer_ranges(scores, vin.timestamps, first.closer, step=1.0)
    second = plan_closer(tiny_model, vin, first, opts, ranges, np.arange(40), scores,
                         view_of=lambda stored, times: FrameView(vin, stored, times))
    assert second.closer is None and second.looked_at == (LookRange(23.0, 28.0, 1.0),)
    assert list(second.view.positions) == [23, 24, 25, 26, 27] and second.frames == 5
    # the best frames in detail: grid x grid more content tokens each, counted in the prompt
    per = tiny_model.tokens_per_frame
    assert dict(second.detail) == {2: 4, 0: 4}  # the best frame (25), then the first of the range (ties in order)
    assert second.prompt.frame_tokens == tuple(per + (16 if i in dict(second.detail) else 0) for i in range(5))
    # the rest kept: as many of the other frames as fit, spread evenly
    keep = plan_question(tiny_model, vin, Q, opts.replace(look_closer=True),
                         closer=dataclasses.replace(wide, rest="keep"))
    kept = plan_closer(tiny_model, vin, keep, opts, ranges, np.arange(40), scores,
                       view_of=lambda stored, times: FrameView(vin, stored, times))
    assert kept.frames == 40 and kept.prompt.tokens + 4 <= tiny_model.context_length


def test_by_default_look_closer_turns_on_as_the_rule_says(tiny_model, monkeypatch):
    from llamavid.pipeline import planning

    vin = memory_input(60)
    small = tiny_model.config.llm["max_position_embeddings"]
    monkeypatch.setitem(tiny_model.config.llm, "max_position_embeddings", 80)
    try:
        opts = AskOptions(temperature=0, max_new_tokens=4)
        plain = plan_question(tiny_model, vin, Q, opts)
        assert plain.note is not None  # the frames do not fit
        assert (plain.closer is not None) == planning.AUTO_WHEN_OVERFLOW
        monkeypatch.setattr(planning, "AUTO_WHEN_OVERFLOW", True)
        assert plan_question(tiny_model, vin, Q, opts).closer is not None
        assert plan_question(tiny_model, vin, Q, opts.replace(look_closer=False)).closer is None
        # asked for, it works with strict_context too: pass 2 plans its own frames
        assert plan_question(tiny_model, vin, Q, opts.replace(look_closer=True, strict_context=True)).closer
    finally:
        tiny_model.config.llm["max_position_embeddings"] = small


# -- the model: tokens in detail ------------------------------------------------------------------------------


def test_detail_tokens_follow_their_frame_and_the_spans_know_it(tiny_model):
    feats = torch.randn(5, 257, tiny_model.config.mm_hidden_size)
    per = tiny_model.tokens_per_frame
    for long_video in (False, True):
        counts = [per, per + 4, per, per, per + 4]
        prompt = tiny_model.prompt(Q, n_frames=5, long_video=long_video, frame_tokens=counts)
        plain = tiny_model.prompt(Q, n_frames=5, long_video=long_video)
        assert prompt.tokens == plain.tokens + 8
        [embeds] = tiny_model.prompt_embeddings(feats, [prompt], detail=((1, 2), (4, 2)))
        [before] = tiny_model.prompt_embeddings(feats, [plain])
        assert embeds.shape[0] == prompt.tokens
        spans = tiny_model.frame_spans(prompt)
        old = tiny_model.frame_spans(plain)
        assert [e - s for s, e in spans] == counts
        # each frame's own two tokens are as without detail; the detail tokens follow them
        shift = 0
        for (s, e), (s0, e0) in zip(spans, old):
            assert torch.equal(embeds[s:s + per], before[s0:e0])
            shift += (e - s) - (e0 - s0)
        detail = tiny_model.detail_tokens(feats, [1], 2, long_video=long_video)
        torch.testing.assert_close(embeds[spans[1][0] + per:spans[1][1]], detail[0])


# -- pass 1: the scorers -----------------------------------------------------------------------------------------


def test_both_scorers_score_every_frame_even_when_the_video_does_not_fit(tiny_model, monkeypatch):
    vin = memory_input(60, seed=3)
    monkeypatch.setitem(tiny_model.config.llm, "max_position_embeddings", 80)  # 60 frames do not fit
    opts = AskOptions(temperature=0, max_new_tokens=4)
    tokens = score_frames(tiny_model, vin, Q, opts, scorer="tokens")
    attention = score_frames(tiny_model, vin, Q, opts, scorer="attention")
    for scored in (tokens, attention):
        assert len(scored) == 60 and np.isfinite(scored.scores).all() and (scored.timestamps == np.arange(60)).all()
        assert 0 <= scored.normalised().min() and scored.normalised().max() == 1.0
    assert (attention.scores > 0).sum() > 40  # every chunk scored its frames
    # at most one chunk: a subsample spread evenly, the first and the last frame included
    one = score_frames(tiny_model, vin, Q, opts, scorer="attention", max_chunks=1)
    assert 1 < len(one) < 60 and one.positions[0] == 0 and one.positions[-1] == 59
    # the tokens scorer is the text-guided attention's log-sum-exp, frame by frame (chunks change nothing)
    again = tiny_model.context_relevance(vin.features, Q, long_video=False, chunk_frames=7)["lse"].numpy()
    np.testing.assert_allclose(tokens.scores, again, rtol=1e-5, atol=1e-5)
    with pytest.raises(llamavid.core.errors.InputError, match="scorer"):
        score_frames(tiny_model, vin, Q, opts, scorer="magic")


# -- the whole path, front ends ---------------------------------------------------------------------------------


def test_look_closer_on_a_video_takes_more_frames_from_it_and_evidence_still_works(tiny_model, clip):
    opts = AskOptions(temperature=0, max_new_tokens=4, look_closer=True, evidence=True, fps=1)
    record = llamavid.ask(tiny_model, clip, Q, opts)
    assert record.looked_at and all(0 <= r.start < r.end <= 12.01 for r in record.looked_at)
    stored_inside = sum(1 for t in range(12) if any(r.start <= t < r.end for r in record.looked_at))
    assert record.frames > stored_inside  # frames between the stored ones, from the video (4 frames/s)
    assert record.frames_available == 12
    assert record.evidence and all(any(r.start - 1 <= e.start <= r.end for r in record.looked_at)
                                   for e in record.evidence)
    data = record.to_json()
    assert data["looked_at"][0].keys() == {"start", "end", "score"}
    # from its .vidtok the video is not at hand: the stored frames of the ranges only
    with open_input(tiny_model, clip, AskOptions(fps=1)) as vin:
        entry = vin.cache_entry
        assert vin.video_path is not None
    with open_input(tiny_model, entry, AskOptions(fps=1)) as vin:
        assert vin.video_path is None
        [done] = answer_questions(tiny_model, vin, [Question(Q, opts.replace(evidence=False))])
    assert done.plan.looked_at and done.plan.view.positions.min() >= 0


def test_off_answers_bit_for_bit_as_before(tiny_model, clip):
    opts = AskOptions(temperature=0, max_new_tokens=6, fps=1)
    plain = llamavid.ask(tiny_model, clip, Q, opts)
    off = llamavid.ask(tiny_model, clip, Q, opts.replace(look_closer=False))
    assert (off.answer, off.frames, off.prompt_tokens) == (plain.answer, plain.frames, plain.prompt_tokens)
    assert "looked_at" not in off.to_json() and "looked_at" not in plain.to_json()


def test_the_command_line_and_a_batch_line_look_closer(tiny, clip, capsys, tmp_path):
    code, out, err = run_cli(capsys, "ask", clip, Q, "--look-closer", "--json", "--temperature", "0",
                             *model_args(tiny, 4))
    assert code == 0, err
    record = json.loads(out)
    assert record["looked_at"] and "looked closer at" in err
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"id": "a", "video": str(clip), "question": Q, "look_closer": True}) + "\n"
                 + json.dumps({"id": "b", "video": str(clip), "question": Q}) + "\n")
    code, out, err = run_cli(capsys, "ask", "--batch", q, "--temperature", "0", *model_args(tiny, 4))
    assert code == 0, err
    lines = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert lines["a"]["looked_at"] and "looked_at" not in lines["b"]
    code, out, err = run_cli(capsys, "ask", clip, Q, "--look-closer", "--choice", "red", "--choice", "blue",
                             "--json", *model_args(tiny, 4))
    assert code == 0, err and json.loads(out)["answer"] in ("red", "blue")


def test_chat_turns_and_summaries_look_closer(tiny, tiny_model, clip, capsys):
    from llamavid.tasks.chat import open_chat

    with open_chat(tiny_model, clip, AskOptions(temperature=0, max_new_tokens=4, look_closer=True)) as chat:
        first = chat.ask(Q)
        second = chat.ask("And the circle?")
    assert first.text is not None and second.text is not None and len(chat.history) == 2
    code, out, err = run_cli(capsys, "summarize", clip, "--look-closer", "--json", *model_args(tiny, 4))
    assert code == 0, err
    assert json.loads(out)["summary"] is not None and "looked closer at" in err


# -- training and data -------------------------------------------------------------------------------------------


def test_training_with_frames_in_detail(tiny_model):
    from llamavid.train.data import Sample
    from llamavid.train.objective import batch_loss, detail_frames

    feats = torch.randn(6, 257, tiny_model.config.mm_hidden_size)
    plain = {"sample": Sample("x", None, [(Q, "red")]), "features": feats, "frame_subtitles": None}
    detailed = {"sample": Sample("x", None, [(Q, "red")], extra={"detail": {"frames": 2, "grid": 2}}),
                "features": feats, "frame_subtitles": None}
    assert detail_frames("x", 6, 2) == detail_frames("x", 6, 2) and len(detail_frames("x", 6, 2)) == 2
    with torch.no_grad():
        a = batch_loss(tiny_model, [plain], max_tokens=4096)
        b = batch_loss(tiny_model, [detailed], max_tokens=4096)
    assert torch.isfinite(a) and torch.isfinite(b) and not torch.equal(a, b)


def test_grounding_teaches_the_attention_where_the_asked_kind_is(tiny_model):
    from llamavid.train.data import Sample
    from llamavid.train.objective import batch_loss, grounding_targets

    events = [{"shape": "ring", "color": "red", "start": 2.0, "end": 3.0, "p0": [112, 112], "p1": [112, 112],
               "radius": 60.0},
              {"shape": "bar", "color": "blue", "start": 0.0, "end": 2.0, "p0": [112, 112], "p1": [112, 112],
               "radius": 60.0}]
    spec = {"kind": "ring", "events": events, "weight": 1.0}
    target, present = grounding_targets([0.0, 1.0, 2.0, 3.0], spec, 16)
    assert present.tolist() == [False, False, True, False]
    assert torch.allclose(target.sum(-1), torch.ones(4))
    ring = syn.shape_mask("ring", 112, 112, 60).reshape(16, 14, 16, 14).mean(axis=(1, 3)).reshape(-1) > 0.4
    assert (target[2] > 0).numpy().tolist() == ring.tolist()  # the ring's patches
    bar = syn.shape_mask("bar", 112, 112, 60).reshape(16, 14, 16, 14).mean(axis=(1, 3)).reshape(-1) > 0
    assert target[0][bar].sum() == 0 and target[0].sum() > 0.99  # a frame without it: the background, not the bar
    feats = torch.randn(4, 257, tiny_model.config.mm_hidden_size)
    item = {"sample": Sample("g", None, [(Q, "red")], extra={"grounding": spec}), "features": feats,
            "frame_subtitles": None, "timestamps": [0.0, 1.0, 2.0, 3.0]}
    plain = {"sample": Sample("g", None, [(Q, "red")]), "features": feats, "frame_subtitles": None}
    tiny_model.zero_grad()
    loss = batch_loss(tiny_model, [item], max_tokens=4096)
    assert loss > batch_loss(tiny_model, [plain], max_tokens=4096)
    loss.backward()
    assert tiny_model.tokens.key_projector.weight.grad.abs().sum() > 0
    tiny_model.zero_grad()


def _attention_share_by_hand(model, item, long_video: bool, on: list[bool]) -> float:
    """The reply's attention share on the frames in ``on``, found without ``evidence_turn``'s arithmetic: the
    frames' tokens are found in the sequence by their values, the reply's rows by the labels, and the weights
    come from the LLM's own eager attention."""
    from llamavid.model.qformer import encode_questions
    from llamavid.train.objective import IGNORE, conversation_inputs

    with torch.no_grad():
        embeds, labels = conversation_inputs(model, item, long_video=long_video, max_tokens=4096)
        ids, mask = encode_questions(model.qformer_tokenizer, [Q], device="cpu")
        tokens = model.frame_tokens(item["features"], ids, mask, long_video=long_video)[0]  # (T, 2, H)
        where = [[int(torch.nonzero((embeds - t).abs().amax(-1) == 0)[0]) for t in frame] for frame in tokens]
        before, model.llm.config._attn_implementation = model.llm.config._attn_implementation, "eager"
        try:
            out = model.llm(inputs_embeds=embeds[None], output_attentions=True)
        finally:
            model.llm.config._attn_implementation = before
    rows = [p - 1 for p in range(1, len(labels)) if labels[p] != IGNORE]
    mean = sum(a[0][:, rows].mean(dim=(0, 1)) for a in out.attentions) / len(out.attentions)  # (L,)
    per_frame = torch.stack([mean[torch.tensor(w)].sum() for w in where])
    return float(per_frame[torch.tensor(on)].sum() / per_frame.sum())


@pytest.mark.parametrize("long_video", [False, True])
def test_the_evidence_loss_is_minus_the_log_of_the_replys_attention_share_where_the_answer_is(tiny_model,
                                                                                              long_video):
    from llamavid.train.data import Sample
    from llamavid.train.objective import batch_loss

    torch.manual_seed(0)
    feats = torch.randn(5, 257, tiny_model.config.mm_hidden_size)
    spec = {"windows": [[1.0, 3.0]], "weight": 0.5}
    common = {"features": feats, "frame_subtitles": ["", "a ring", "", "", "the end"] if long_video else None,
              "timestamps": [0.0, 1.0, 2.0, 3.0, 4.0]}
    item = dict(common, sample=Sample("e", None, [(Q, "red")], long_video, extra={"evidence": spec}))
    plain = dict(common, sample=Sample("e", None, [(Q, "red")], long_video))
    other = dict(common, sample=Sample("o", None, [(Q, "blue")], long_video))
    share = _attention_share_by_hand(tiny_model, item, long_video, [False, True, True, False, False])
    assert 0 < share < 1
    with torch.no_grad():
        alone = batch_loss(tiny_model, [item], max_tokens=4096) - batch_loss(tiny_model, [plain], max_tokens=4096)
        mixed = (batch_loss(tiny_model, [other, item], max_tokens=4096)
                 - batch_loss(tiny_model, [other, plain], max_tokens=4096))
    assert abs(float(alone) - 0.5 * -np.log(share)) < 1e-4
    assert abs(float(mixed) - 0.5 * -np.log(share) / 2) < 1e-4  # averaged over the batch; the CE is unchanged
    tiny_model.zero_grad()
    batch_loss(tiny_model, [other, item], max_tokens=4096).backward()
    assert tiny_model.llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    tiny_model.zero_grad()


@pytest.mark.parametrize("long_video", [False, True])
def test_each_turn_of_a_conversation_is_taught_on_its_own_frames_and_reply(tiny_model, long_video):
    from llamavid.model.qformer import encode_questions
    from llamavid.train.data import Sample
    from llamavid.train.objective import IGNORE, conversation_inputs

    feats = torch.randn(4, 257, tiny_model.config.mm_hidden_size)
    questions = [(Q, "red"), ("What shape is it?", "ring")]
    item = {"sample": Sample("t", None, questions, long_video, extra={"evidence": {"windows": [[2.0, 3.0]]}}),
            "features": feats, "frame_subtitles": ["", "", "hi", ""] if long_video else None,
            "timestamps": [0.0, 1.0, 2.0, 3.0]}
    turns: list = []
    with torch.no_grad():
        embeds, labels = conversation_inputs(tiny_model, item, long_video=long_video, max_tokens=4096, evidence=turns)
        assert len(turns) == 2
        replies = [p - 1 for p in range(1, len(labels)) if labels[p] != IGNORE]
        assert turns[0].answer + turns[1].answer == replies
        for turn, (question, reply) in zip(turns, questions):
            assert len(turn.answer) == len(tiny_model.text_tokenizer.encode(reply)) + 1  # and its end token
            assert turn.on_screen == [False, False, True, False]
            ids, mask = encode_questions(tiny_model.qformer_tokenizer, [question], device="cpu")
            tokens = tiny_model.frame_tokens(feats, ids, mask, long_video=long_video)[0]  # (T, 2, H)
            for (a, b), frame in zip(turn.frames, tokens):
                assert torch.equal(embeds[a:b], frame.to(embeds.dtype)) and a < turn.answer[0]
        assert turns[0].answer[-1] < turns[1].frames[0][0]


def test_no_evidence_loss_where_no_frame_or_every_frame_shows_the_answer(tiny_model):
    from llamavid.train.data import Sample
    from llamavid.train.objective import batch_loss

    feats = torch.randn(3, 257, tiny_model.config.mm_hidden_size)
    plain = {"sample": Sample("n", None, [(Q, "red")]), "features": feats, "frame_subtitles": None}
    with torch.no_grad():
        base = batch_loss(tiny_model, [plain], max_tokens=4096)
        for window in ([[5.0, 6.0]], [[0.0, 3.0]]):
            item = dict(plain, sample=Sample("n", None, [(Q, "red")], extra={"evidence": {"windows": window}}),
                        timestamps=[0.0, 1.0, 2.0])
            assert torch.equal(batch_loss(tiny_model, [item], max_tokens=4096), base)


def test_stage_three_alone_says_when_the_window_and_first_last_answers_are_on_screen(tmp_path):
    from llamavid.train.demo import split_items

    def event(start, end):
        return {"shape": "ring", "color": "red", "start": start, "end": end, "p0": [0, 0], "p1": [0, 0],
                "radius": 10.0}

    clips = [{"id": "train-window-0000", "events": [event(4.0, 7.0)]},
             {"id": "train-sequence-0000", "events": [event(0.0, 2.0), event(2.0, 5.0), event(5.0, 6.0)]},
             {"id": "train-sequence-0001", "events": [event(0.0, 2.0)]}]
    (tmp_path / "clips.json").write_text(json.dumps(clips))

    def qa(clip, n, qtype, long=False):
        return {"id": f"{clip}-q{n}", "video": f"videos/{clip}.mp4", "question_type": qtype, "answer": "red",
                "long": long,
                "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "red"}]}

    items = [qa("train-window-0000", 0, "color"), qa("train-sequence-0000", 0, "first"),
             qa("train-sequence-0000", 1, "last"), qa("train-sequence-0000", 2, "count"),
             qa("train-sequence-0001", 0, "first"), qa("train-sequence-0000", 3, "subtitle", long=True)]
    (tmp_path / "qa.json").write_text(json.dumps(items))
    parts = split_items(tmp_path / "qa.json", tmp_path, replay_per_window=5, evidence=0.5)
    stage2 = json.loads(parts["stage2"].read_text())
    stage3 = {i["id"]: i.get("evidence") for i in json.loads(parts["stage3"].read_text())}
    assert not any("evidence" in i for i in stage2)
    assert stage3["train-window-0000-q0"] == {"windows": [[4.0, 7.0]], "weight": 0.5}
    assert stage3["train-sequence-0000-q0"] == {"windows": [[0.0, 2.0]], "weight": 0.5}
    assert stage3["train-sequence-0000-q1"] == {"windows": [[5.0, 6.0]], "weight": 0.5}
    assert stage3["train-sequence-0000-q2"] is None and stage3["train-sequence-0001-q0"] is None
    assert stage3["train-sequence-0000-q3"] is None
    off = split_items(tmp_path / "qa.json", tmp_path, replay_per_window=5)
    assert not any("evidence" in i for i in json.loads(off["stage3"].read_text()))


def test_haystack_and_pick_clips_hold_one_needle_of_the_asked_kind():
    for clip in syn.haystack_clips("test", minutes=(5,), per_cell=1):
        kind = next(k for k in syn.SHAPES if f" {k}" in clip.qa[0][1])
        needles = [e for e in clip.events if e.shape == kind]
        assert len(needles) == 1 and needles[0].end - needles[0].start == 1.0 and needles[0].color == clip.qa[0][2]
        depth = int(clip.id.split("-d")[1][:2]) / 100
        assert abs(needles[0].start - depth * clip.seconds) <= 4
        covered = sorted((e.start, e.end) for e in clip.events)  # distractors all the way through
        assert covered[0][0] == 0 and covered[-1][1] == clip.seconds
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    rng = np.random.default_rng(1)
    for i in range(20):
        clip = syn.pick_clip(rng, f"p{i}")
        kind = next(k for k in syn.SHAPES if f" {k}" in clip.qa[0][1])
        assert sum(e.shape == kind for e in clip.events) == 1


def test_check_questions_need_the_colour_and_the_kind_and_leave_the_clips_as_they_were():
    """Check questions (what ``llamavid search`` asks a moment) are added after the fact, in the search's own
    words: the pick clips' videos stay the same; yes when that colour and kind are on screen at some point,
    and the no's include a kind on screen in another colour and a colour on screen on another kind."""
    from llamavid.tasks.search import CHECK_CHOICES, CHECK_PROMPT

    plain = syn.make_extra_clips("train", "pick", 300, seed=0)
    checked = syn.make_extra_clips("train", "pick", 300, seed=0)
    syn.add_check_questions(checked, CHECK_PROMPT, CHECK_CHOICES, seed=5)
    assert [c.events for c in checked] == [c.events for c in plain]
    assert [c.qa[:1] for c in checked] == [c.qa for c in plain]
    answers, kinds_shown, colours_shown = [], 0, 0
    for clip in checked:
        [(qtype, question, answer)] = clip.qa[1:]
        assert qtype == "check"
        query = question.removeprefix("Does this part of the video show ").removesuffix("? Answer yes or no.")
        assert question == CHECK_PROMPT.format(query=query)
        _, color, kind = query.split()
        shown = {(e.color, e.shape) for e in clip.events}
        assert answer == ("Yes" if (color, kind) in shown else "No")
        answers.append(answer)
        if answer == "No":
            kinds_shown += any(s == kind for _, s in shown)
            colours_shown += any(c == color for c, _ in shown)
    assert 120 <= answers.count("Yes") <= 180
    no = answers.count("No")
    assert kinds_shown > no / 2 and colours_shown > no / 2  # most no's share a word with what is on screen


def test_a_check_question_is_grounded_on_its_colour_and_kind_only(tmp_path):
    from llamavid.train.objective import grounding_targets

    events = [{"shape": "ring", "color": "red", "start": 0.0, "end": 1.0, "p0": [112, 112], "p1": [112, 112],
               "radius": 60.0},
              {"shape": "ring", "color": "blue", "start": 1.0, "end": 2.0, "p0": [112, 112], "p1": [112, 112],
               "radius": 60.0},
              {"shape": "bar", "color": "blue", "start": 2.0, "end": 3.0, "p0": [112, 112], "p1": [112, 112],
               "radius": 60.0}]
    target, present = grounding_targets([0.5, 1.5, 2.5], {"kind": "ring", "color": "blue", "events": events}, 16)
    assert present.tolist() == [False, True, False]
    ring = syn.shape_mask("ring", 112, 112, 60).reshape(16, 14, 16, 14).mean(axis=(1, 3)).reshape(-1)
    assert (target[1] > 0).numpy().tolist() == (ring > 0.4).tolist()
    assert target[0][ring >= 0.05].sum() == 0  # the red ring is not what is asked: the background is
    _, kind_only = grounding_targets([0.5, 1.5, 2.5], {"kind": "ring", "events": events}, 16)
    assert kind_only.tolist() == [True, True, False]
    # written with the clip: the question's colour and kind
    clip = syn.Clip("c", "pick", 3.0, 4, 30, [syn.ShapeEvent(e["shape"], e["color"], e["start"], e["end"],
                                                             tuple(e["p0"]), tuple(e["p1"]), e["radius"])
                                              for e in events])
    clip.qa = [("check", "Does this part of the video show the blue ring? Answer yes or no.", "Yes")]
    [item] = json.loads(syn.write_split([clip], tmp_path).read_text())
    assert (item["grounding"]["kind"], item["grounding"]["color"]) == ("ring", "blue")
    assert item["answer"] == "Yes" and not item["long"]


def test_the_demo_recipe_asks_check_questions_in_the_searchs_words():
    from llamavid.tasks.search import CHECK_CHOICES, CHECK_PROMPT
    from llamavid.train.demo import RECIPES, DemoRecipe, add_checks

    clips = syn.make_extra_clips("test", "pick", 20, seed=0)
    add_checks(clips, "test", DemoRecipe(**RECIPES["checks"]))
    checks = [q for c in clips for q in c.qa if q[0] == "check"]
    assert len(checks) == 20
    head, tail = CHECK_PROMPT.split("{query}")
    assert all(q.startswith(head) and q.endswith(tail) and a in CHECK_CHOICES for _, q, a in checks)
    before = syn.make_extra_clips("test", "pick", 20, seed=0)
    add_checks(before, "test", DemoRecipe(**RECIPES["shipped"]))
    assert all(len(c.qa) == 1 for c in before)
