"""Benchmark loaders, resumable predictions, scoring and reports, on small hand-made files.

Expected numbers are worked out by hand in the comments next to each assertion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamavid.core.errors import InputError
from llamavid.eval import (
    BENCHMARKS,
    CHOICE_INSTRUCTION,
    BenchmarkResult,
    EvalItem,
    extract_option,
    format_choice_question,
    load_benchmark,
    missing_videos,
    normalize_answer,
    read_jsonl,
    render_markdown,
    run_predictions,
    score_file,
    write_report,
)


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("vid1.avi", "vid2.mp4", "v_abc.mp4", "v_xyz.mkv", "clip.webm", "ego1.mp4"):
        (folder / name).write_bytes(b"")
    return folder


# ----------------------------------------------------------------------------------------------------
# Loaders


def test_registry_names():
    assert list(BENCHMARKS) == [
        "msvd-qa", "msrvtt-qa", "activitynet-qa", "videochatgpt-general", "videochatgpt-temporal",
        "videochatgpt-consistency", "videomme", "egoschema", "mvbench", "synthetic", "synthetic-mc",
    ]


def test_msvd_style(tmp_path, videos):
    path = write_json(
        tmp_path / "test_qa.json",
        [
            {"video_id": "vid1", "question": "what is a man doing?", "answer": "run", "id": 0},
            {"video_name": "vid2", "question": "who sings?", "answer": "woman", "id": 1},
            {"video_id": "vid3", "question": "what falls?", "answer": "ball", "id": 1},  # repeated id
        ],
    )
    items = load_benchmark("msvd-qa", path, videos)
    assert [i.id for i in items] == ["0", "1", "1_1"]
    assert items[0].video == str(videos / "vid1.avi") and items[1].video == str(videos / "vid2.mp4")
    assert (items[0].question, items[0].answer, items[0].kind) == ("what is a man doing?", "run", "open")
    assert [i.id for i in missing_videos(items)] == ["1_1"]  # vid3 is not in the folder
    assert load_benchmark("msrvtt-qa", path)[0].video == "vid1"  # without a video dir: the name


def test_activitynet_pairs_by_question_id(tmp_path, videos):
    q = write_json(
        tmp_path / "test_q.json",
        [
            {"video_name": "abc", "question_id": "v_abc_0", "question": "is it day"},
            {"video_name": "xyz", "question_id": "v_xyz_0", "question": "what color"},
        ],
    )
    # Answers in the other order: pairing by question_id still gets them right.
    a = write_json(
        tmp_path / "test_a.json",
        [{"answer": "red", "type": 4, "question_id": "v_xyz_0"},
         {"answer": "yes", "type": 3, "question_id": "v_abc_0"}],
    )
    items = load_benchmark("activitynet-qa", [q, a], videos)
    assert [(i.id, i.answer, i.extra["type"]) for i in items] == [("v_abc_0", "yes", 3), ("v_xyz_0", "red", 4)]
    assert [i.video for i in items] == [str(videos / "v_abc.mp4"), str(videos / "v_xyz.mkv")]
    assert ([i.id for i in load_benchmark("activitynet-qa", tmp_path, videos)]
            == ["v_abc_0", "v_xyz_0"])  # a directory works

    write_json(a, [{"answer": "red", "type": 4, "question_id": "v_xyz_0"}])
    with pytest.raises(InputError, match=r"test_a\.json.*no answer for question_id 'v_abc_0'"):
        load_benchmark("activitynet-qa", [q, a])


def test_activitynet_positional_answers(tmp_path):
    q = write_json(tmp_path / "q.json", [{"video_name": "abc", "question_id": "x", "question": "?"}])
    a = write_json(tmp_path / "a.json", [{"answer": "yes"}])
    assert load_benchmark("activitynet-qa", [q, a])[0].answer == "yes"


def test_videochatgpt_files(tmp_path):
    general = write_json(
        tmp_path / "generic_qa.json",
        [{"Q": "Describe.", "A": "A man cooks.", "video_name": "v_abc"},
         {"Q": "Where?", "A": "Kitchen.", "video_name": "v_abc"}],
    )
    items = load_benchmark("videochatgpt-general", general)
    assert [(i.id, i.kind) for i in items] == [("v_abc_0", "generative"), ("v_abc_1", "generative")]
    assert load_benchmark("videochatgpt-temporal", general)[1].question == "Where?"
    consistency = write_json(tmp_path / "consistency_qa.json",
                             [{"Q1": "What?", "Q2": "Which?", "A": "Ski.", "video_name": "v_q"}])
    (item,) = load_benchmark("videochatgpt-consistency", consistency)
    assert (item.id, item.kind, item.question, item.extra["question2"], item.answer) == ("v_q_0", "consistency",
                                                                                         "What?", "Which?", "Ski.")


def test_choice_question_wording():
    assert format_choice_question("What is shown?", ["a dog", "a cat"]) == (
        "What is shown?\n(A) a dog\n(B) a cat\nAnswer with the option's letter from the given choices directly."
    )
    assert CHOICE_INSTRUCTION == "Answer with the option's letter from the given choices directly."


def test_videomme_flat_jsonl_and_nested_json(tmp_path, videos):
    flat = write_jsonl(
        tmp_path / "videomme.jsonl",
        [
            {"videoID": "clip", "question_id": "001-1", "question": "Color?",
             "options": ["A. red", "B. blue", "C. green", "D. black"], "answer": "C", "task_type": "Attribute"},
            {"video": "clip", "question": "Count?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "A"},
        ],
    )
    items = load_benchmark("videomme", flat, videos)
    assert [(i.id, i.answer, i.options) for i in items] == [("001-1", "C", ["red", "blue", "green", "black"]),
                                                            ("clip_0", "A", ["1", "2", "3", "4"])]
    assert items[0].question == format_choice_question("Color?", ["red", "blue", "green", "black"])
    assert items[0].extra["raw_question"] == "Color?" and items[0].extra["task_type"] == "Attribute"
    assert items[0].video == str(videos / "clip.webm")
    nested = write_json(
        tmp_path / "videomme.json",
        [{"videoID": "clip", "duration": "short",
          "questions": [{"question_id": "q1", "question": "?", "options": ["A. x", "B. y"], "answer": "B"}]}],
    )
    (item,) = load_benchmark("videomme", nested)
    assert (item.id, item.answer, item.extra["duration"]) == ("q1", "B", "short")


def test_egoschema_with_partial_answers(tmp_path, videos):
    questions = write_json(
        tmp_path / "questions.json",
        [
            {"q_uid": "ego1", "question": "What did c do?", **{f"option {k}": f"opt{k}" for k in range(5)}},
            {"q_uid": "ego2", "question": "Why?", **{f"option {k}": f"why{k}" for k in range(5)}},
        ],
    )
    answers = write_json(tmp_path / "subset_answers.json", {"ego1": 3})
    items = load_benchmark("egoschema", [questions, answers], videos)
    assert [(i.id, i.answer, len(i.options or [])) for i in items] == [("ego1", "D", 5), ("ego2", None, 5)]
    assert items[0].video == str(videos / "ego1.mp4")
    write_json(answers, {"ego1": 7})
    with pytest.raises(InputError, match=r"subset_answers\.json.*'ego1'"):
        load_benchmark("egoschema", [questions, answers])


def test_mvbench(tmp_path):
    path = write_json(
        tmp_path / "action_sequence.json",
        [
            {"video": "a.mp4", "question": "What next?", "candidates": ["sit", "stand", "walk"], "answer": "walk"},
            {"video": "b.mp4", "question": "What first?", "candidates": ["jump", "run"], "answer": "jump", "start": 1.0,
             "end": 4.5},
        ],
    )
    items = load_benchmark("mvbench", path)
    assert [(i.id, i.answer, i.extra["task"]) for i in items] == [("action_sequence_0", "C", "action_sequence"),
                                                                  ("action_sequence_1", "A", "action_sequence")]
    assert items[1].extra["start"] == 1.0
    write_json(path,
               [{"video": "a.mp4", "question": "?", "candidates": ["x", "y"], "answer": "x"},
                {"video": "b.mp4", "question": "?", "candidates": ["x", "y"], "answer": "z"}])
    with pytest.raises(InputError, match=r"action_sequence\.json: item 1: answer 'z' is not one of the candidates"):
        load_benchmark("mvbench", path)


def test_synthetic(tmp_path):
    path = write_json(
        tmp_path / "synthetic.json",
        [
            {
                "id": "s1",
                "video": "movie.mp4",
                "conversations": [{"from": "human", "value": "<image>\nHow many cars?"},
                                  {"from": "gpt", "value": "Two cars."}],
                "question_type": "count",
                "answer": "2",
            },
            {"id": "s2", "video": "movie.mp4",
             "conversations": [{"from": "human", "value": "<image>\nColor?"}, {"from": "gpt", "value": "Red"}]},
        ],
    )
    items = load_benchmark("synthetic", path)
    assert [(i.id, i.question, i.answer, i.extra["question_type"], i.kind) for i in items] == [
        ("s1", "How many cars?", "2", "count", "exact"),
        ("s2", "Color?", "Red", "unknown", "exact"),
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("msvd-qa",
         '[{"video_id": "a", "question": "q", "answer": "x"},\n {"video_id": "b", "question": "q" "answer": "y"}]',
         r"bad\.json: line 2: not valid JSON"),
        ("msvd-qa", '{"video_id": "a", "question": "q", "answer": "x"}\n{"video_id": "b", "question": \n',
         r"bad\.json: line 2: not valid JSON"),
        ("msvd-qa", '[{"video_id": "a", "question": "q", "answer": "x"}, {"video_id": "b", "answer": "y"}]',
         r"bad\.json: item 1: missing field 'question'"),
        ("msvd-qa", '[{"video_id": "a", "question": ["q"], "answer": "x"}]',
         r"bad\.json: item 0: field 'question' should be text"),
        ("msvd-qa", '"just a string"', r"bad\.json: expected a JSON list"),
        ("msvd-qa", "", r"bad\.json: file is empty"),
        ("videomme", '[{"video": "a", "question": "q", "options": ["A. x", "B. y"], "answer": "E"}]',
         r"bad\.json: item 0: answer 'E' is not one of the option letters A-B"),
        ("synthetic", '[{"id": "1", "video": "v", "conversations": "no"}]',
         r"bad\.json: item 0: field 'conversations'"),
        ("videochatgpt-general", '[{"video_name": "v", "Q": "q"}]', r"bad\.json: item 0: missing field 'A'"),
    ],
)
def test_malformed_files_name_file_and_position(tmp_path, name, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        load_benchmark(name, path)
    assert "\n" not in str(caught.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown benchmark 'nope'; known: msvd-qa"):
        load_benchmark("nope", tmp_path / "x.json")
    with pytest.raises(InputError, match="missing.json: file not found"):
        load_benchmark("msvd-qa", tmp_path / "missing.json")
    path = write_json(tmp_path / "a.json", [])
    with pytest.raises(InputError, match="no items"):
        load_benchmark("msvd-qa", path)
    with pytest.raises(InputError, match="got 2 file"):
        load_benchmark("msvd-qa", [path, path])


# ----------------------------------------------------------------------------------------------------
# Predictions


def open_items(n: int, video: str = "v") -> list[EvalItem]:
    return [EvalItem(id=f"q{i}", video=video, question=f"question {i}?", answer=f"a{i}", kind="open") for i in range(n)]


def test_predictions_record_errors_and_go_on(tmp_path):
    out = tmp_path / "pred.jsonl"
    events = []

    def answer(item: EvalItem) -> str:
        if item.id == "q1":
            raise RuntimeError("cannot decode\nvideo")
        return item.answer.upper()

    stats = run_predictions(open_items(3), answer, out, on_progress=events.append)
    assert (stats.total, stats.skipped, stats.written, stats.errors) == (3, 0, 3, 1)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert rows[0] == {"id": "q0", "video": "v", "question": "question 0?", "answer": "a0", "pred": "A0",
                       "kind": "open", "extra": {}}
    assert rows[1] == {"id": "q1", "video": "v", "kind": "open", "error": "RuntimeError: cannot decode video"}
    assert [(e.done, e.total, e.item_id, e.error is not None) for e in events] == [(1, 3, "q0", False),
                                                                                   (2, 3, "q1", True),
                                                                                   (3, 3, "q2", False)]


def test_resume_after_kill_with_torn_line(tmp_path):
    out = tmp_path / "pred.jsonl"
    items = open_items(5)
    # A run killed while writing q2: two complete lines, then half a line.
    complete = [{"id": "q0", "pred": "old0"}, {"id": "q1", "error": "RuntimeError: boom"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in complete) + '{"id": "q2", "video": "v", "pre')
    asked = []

    def answer(item: EvalItem) -> str:
        asked.append(item.id)
        if item.id == "q3":
            raise ValueError("bad frame")
        return "new"

    stats = run_predictions(items, answer, out)
    assert asked == ["q2", "q3", "q4"]  # q0 and q1 (even the error) are done; the torn q2 is redone
    assert (stats.skipped, stats.written, stats.errors) == (2, 3, 1)
    rows = read_jsonl(out)
    ids = [r["id"] for r in rows]
    assert ids == ["q0", "q1", "q2", "q3", "q4"] and len(set(ids)) == len(ids)  # none lost, none twice
    assert rows[0]["pred"] == "old0" and rows[3]["error"] == "ValueError: bad frame"
    # Running again does nothing.
    assert run_predictions(items, answer, out).written == 0 and asked == ["q2", "q3", "q4"]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    out = tmp_path / "pred.jsonl"
    out.write_text('{"id": "q0"}\nnot json\n{"id": "q2"}\n')
    with pytest.raises(InputError, match=r"pred\.jsonl: already exists and is not an earlier output .*line 2"):
        run_predictions(open_items(3), lambda item: "x", out)
    assert out.read_text() == '{"id": "q0"}\nnot json\n{"id": "q2"}\n'  # refused, and left as it was


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(InputError, match="duplicate id 'q0'"):
        run_predictions(open_items(2) + open_items(1), lambda item: "x", tmp_path / "p.jsonl")


def test_batch_mode_groups_by_video(tmp_path):
    items = [
        EvalItem("a0", "A.mp4", "q", "x", "open"),
        EvalItem("a1", "A.mp4", "q", "x", "open"),
        EvalItem("b0", "B.mp4", "q", "x", "open"),
        EvalItem("a2", "A.mp4", "q", "x", "open"),
        EvalItem("c0", "C.mp4", "q", "x", "open"),
    ]
    batches = []

    def answer_batch(batch: list[EvalItem]) -> list[str]:
        batches.append([i.id for i in batch])
        if batch[0].video == "C.mp4":
            raise RuntimeError("C is broken")
        return [f"{i.id}!" for i in batch]

    out = tmp_path / "pred.jsonl"
    stats = run_predictions(items, None, out, answer_batch_fn=answer_batch, batch_size=2)
    # A's three items in two batches (batch_size=2), then B, then C; a2 moves up to its video's group.
    assert batches == [["a0", "a1"], ["a2"], ["b0"], ["c0"]]
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a0", "a1", "b0", "a2", "c0"]  # the file ends in input order
    assert rows[0]["pred"] == "a0!" and rows[4]["error"] == "RuntimeError: C is broken"
    assert stats.errors == 1


def test_batch_answer_count_mismatch_is_an_error(tmp_path):
    out = tmp_path / "pred.jsonl"
    run_predictions(open_items(2), None, out, answer_batch_fn=lambda batch: ["only one"])
    assert [r["error"] for r in read_jsonl(out)] == ["answer_batch_fn: expected 2 answers, got 1"] * 2


def test_consistency_items_are_asked_twice(tmp_path):
    item = EvalItem("v_0", "v", "What?", "Ski.", "consistency", extra={"question2": "Which?"})
    out = tmp_path / "pred.jsonl"
    run_predictions([item], lambda it: f"answer to {it.question}", out)
    (row,) = read_jsonl(out)
    assert (row["question"], row["question2"], row["pred1"], row["pred2"]) == ("What?", "Which?", "answer to What?",
                                                                               "answer to Which?")
    out2 = tmp_path / "pred2.jsonl"
    run_predictions([item], None, out2, answer_batch_fn=lambda batch: [f"b:{it.question}" for it in batch])
    assert read_jsonl(out2)[0]["pred2"] == "b:Which?"


# ----------------------------------------------------------------------------------------------------
# Scoring


def test_score_open_ended(tmp_path):
    def verdict(pred: str | None, score: float | None, parsed: bool = True) -> dict[str, Any]:
        return {"judgements": {"qa": {"parsed": parsed, "pred": pred, "score": score, "raw": "..."}}}

    path = write_jsonl(
        tmp_path / "judged.jsonl",
        [
            {"id": "1", **verdict("yes", 5)},
            {"id": "2", **verdict("yes", 4.8)},
            {"id": "3", **verdict("no", 1)},
            {"id": "4", **verdict("no", 2)},
            {"id": "5", **verdict(None, None, parsed=False)},
            {"id": "6", "error": "VideoError: x"},
            {"id": "7", "judge_error": "HTTP 400"},
        ],
    )
    result = score_file("msvd-qa", path)
    # Judged: 4 parsed verdicts, 2 yes -> accuracy 2/4 = 0.5.
    # Scores truncated as published: 5, 4 (from 4.8), 1, 2 -> 12/4 = 3.0.
    assert result.metrics == {"accuracy": 0.5, "score": 3.0}
    assert result.counts == {"total": 7, "errors": 1, "judge_errors": 1, "judged": 4, "unparsed": 1, "yes": 2, "no": 2}
    assert result.paper == {"accuracy": 0.697, "score": 3.7}
    # Without truncation: (5 + 4.8 + 1 + 2) / 4 = 3.2.
    assert score_file("msvd-qa", path, truncate_scores=False).metrics["score"] == pytest.approx(3.2)


def test_score_generative_temporal_with_unparsed(tmp_path):
    path = write_jsonl(
        tmp_path / "judged.jsonl",
        [
            {"id": "1", "judgements": {"temporal": {"parsed": True, "pred": None, "score": 3, "raw": ""}}},
            {"id": "2", "judgements": {"temporal": {"parsed": True, "pred": None, "score": 2, "raw": ""}}},
            {"id": "3", "judgements": {"temporal": {"parsed": False, "pred": None, "score": None, "raw": "??"}}},
        ],
    )
    result = score_file("videochatgpt-temporal", path)
    # (3 + 2) / 2 = 2.5 over the two parsed verdicts; the third is counted as unparsed.
    assert result.metrics == {"temporal": 2.5}
    assert (result.counts["judged"], result.counts["unparsed"]) == (2, 1)
    assert result.breakdown["temporal"] == {"mean": 2.5, "judged": 2, "unparsed": 1}


@pytest.mark.parametrize(
    "pred, letter",
    [
        ("B", "B"), ("(B)", "B"), ("B.", "B"), ("b", "B"), ("[C]", "C"), ("Answer: B", "B"),
        ("The answer is (C).", "C"), ("Best option: D", "D"), ("C. a red car", "C"), ("(D) red", "D"),
        ("I think it is a cat.", "B"), ("The red car", "C"), ("red", "D"), ("A man is walking", None),
        ("none of them", None), ("", None), ("E", None),
    ],
)
def test_extract_option(pred, letter):
    assert extract_option(pred, ["a dog", "a cat", "a red car", "red"]) == letter


def test_score_choice(tmp_path, videos):
    path = write_jsonl(
        tmp_path / "videomme.jsonl",
        [
            {"videoID": "clip", "question_id": f"q{i}", "question": "?",
             "options": ["A. dog", "B. cat", "C. car", "D. bus"], "answer": answer, "task_type": task}
            for i, (answer, task) in enumerate([("A", "t1"), ("B", "t1"), ("C", "t2"), ("D", "t2"), ("A", "t2"),
                                                ("B", "t2")])
        ],
    )
    items = load_benchmark("videomme", path, videos)
    replies = {"q0": "A", "q1": "(B) cat", "q2": "The answer is D", "q3": "I have no idea", "q4": "dog"}

    def answer(item: EvalItem) -> str:
        if item.id == "q5":
            raise RuntimeError("decode error")
        return replies[item.id]

    preds = tmp_path / "pred.jsonl"
    run_predictions(items, answer, preds)
    result = score_file("videomme", preds)
    # q0 A right, q1 B right, q2 D wrong (C), q3 no option (wrong), q4 "dog" = A right, q5 error (not scored).
    # Accuracy 3/5 = 0.6; by task: t1 2/2, t2 1/3.
    assert result.metrics == {"accuracy": 0.6}
    assert result.counts == {"total": 6, "errors": 1, "scored": 5, "correct": 3, "no_option": 1, "unlabeled": 0}
    assert result.breakdown == {"t1": {"accuracy": 1.0, "n": 2}, "t2": {"accuracy": pytest.approx(1 / 3), "n": 3}}


def test_score_choice_counts_unlabeled(tmp_path):
    questions = write_json(tmp_path / "q.json",
                           [{"q_uid": u, "question": "?", **{f"option {k}": f"o{k}" for k in range(5)}}
                            for u in ("e1", "e2")])
    answers = write_json(tmp_path / "a.json", {"e1": 2})
    preds = tmp_path / "pred.jsonl"
    run_predictions(load_benchmark("egoschema", [questions, answers]), lambda item: "C", preds)
    result = score_file("egoschema", preds)
    assert result.metrics == {"accuracy": 1.0} and result.counts["unlabeled"] == 1 and result.counts["scored"] == 1


def test_normalize_answer():
    assert normalize_answer("Two.") == normalize_answer("2") == "2"
    assert normalize_answer("The Red Car!") == "red car"
    assert normalize_answer("twenty-one") == "21"
    assert normalize_answer("3.5 m") == "3.5 m"
    assert normalize_answer("1,000 people") == "1000 people"
    assert normalize_answer("An apple") == normalize_answer("apple")


def test_score_synthetic(tmp_path):
    rows = [
        ("count", "2", "Two."),  # right: "two" -> "2"
        ("count", "3", "three people"),  # wrong: "3 people" != "3"
        ("color", "red", "Red"),  # right
        ("color", "a blue car", "The blue car."),  # right: articles and punctuation dropped
        ("action", "running", "walking"),  # wrong
    ]
    items = [
        {"id": f"s{i}", "video": "m.mp4",
         "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": gt}], "question_type": t,
         "answer": gt}
        for i, (t, gt, _) in enumerate(rows)
    ]
    loaded = load_benchmark("synthetic", write_json(tmp_path / "s.json", items))
    preds = tmp_path / "pred.jsonl"
    replies = {f"s{i}": reply for i, (_, _, reply) in enumerate(rows)}
    run_predictions(loaded + [EvalItem("s9", "m.mp4", "q", "x", "exact", extra={"question_type": "count"})],
                    lambda item: replies.get(item.id) or 1 / 0, preds)
    result = score_file("synthetic", preds)
    # 3 right of 5 scored = 0.6; count 1/2, color 2/2, action 0/1; s9 raised -> 1 error, not scored.
    assert result.metrics == {"accuracy": 0.6}
    assert result.counts == {"total": 6, "errors": 1, "scored": 5, "correct": 3}
    assert result.breakdown == {"action": {"accuracy": 0.0, "n": 1}, "color": {"accuracy": 1.0, "n": 2},
                                "count": {"accuracy": 0.5, "n": 2}}


# ----------------------------------------------------------------------------------------------------
# Reports


def test_report_layout(tmp_path):
    results = [
        BenchmarkResult("msvd-qa", "MSVD-QA", {"accuracy": 0.6823, "score": 3.614},
                        {"total": 10, "errors": 1, "judge_errors": 0, "judged": 8, "unparsed": 1},
                        paper={"accuracy": 0.697, "score": 3.7}),
        BenchmarkResult("videochatgpt-temporal", "Video-ChatGPT (temporal)", {"temporal": 2.5},
                        {"total": 3, "errors": 0, "judge_errors": 0, "judged": 3, "unparsed": 0}),
        BenchmarkResult("videomme", "Video-MME", {"accuracy": 0.6},
                        {"total": 6, "errors": 1, "scored": 5, "correct": 3, "no_option": 1, "unlabeled": 0}),
        BenchmarkResult("synthetic", "llamavid synthetic", {"accuracy": 0.6},
                        {"total": 5, "errors": 0, "scored": 5, "correct": 3},
                        breakdown={"count": {"accuracy": 0.5, "n": 2}}),
    ]
    md, js = tmp_path / "out" / "report.md", tmp_path / "out" / "report.json"
    write_report(results, md, js)
    text = md.read_text()
    assert text == render_markdown(results)
    assert ("| Method | MSVD-QA Acc | MSVD-QA Score | MSRVTT-QA Acc | MSRVTT-QA Score | ActivityNet-QA Acc | "
            "ActivityNet-QA Score |" in text)
    assert "| LLaMA-VID-7B (paper) | 69.7 | 3.7 | 57.7 | 3.2 | 47.4 | 3.3 |" in text
    assert "| This run | 68.2 | 3.61 | – | – | – | – |" in text
    assert "| LLaMA-VID-7B (paper) | 2.96 | 3.00 | 3.53 | 2.46 | 2.51 |" in text
    assert "| This run | – | – | – | 2.50 | – |" in text
    assert "| Video-MME | 60.0 | 5 | 1 | 1 | 0 |" in text
    assert "| count | 50.0 | 2 |" in text
    assert "MSVD-QA: 1 unparsed verdicts, 1 prediction errors" in text
    data = json.loads(js.read_text())
    assert data["format"] == "llamavid-eval-report/1"
    assert [r["benchmark"] for r in data["results"]] == ["msvd-qa", "videochatgpt-temporal", "videomme", "synthetic"]
    assert data["paper"]["figures"]["videochatgpt-consistency"] == {"consistency": 2.51}


@pytest.mark.parametrize(
    "content, ids, repaired",
    [
        (b'{"id": "a"}\n{"id": "b"}', ["a", "b"], b'{"id": "a"}\n{"id": "b"}\n'),  # complete but no final newline
        (b'{"id": "a"}\n\x00\x00\x00\x00', ["a"], b'{"id": "a"}\n'),  # zero-filled tail after a crash
        (b'{"id": "a"}\n{"id": "b"\n', ["a"], b'{"id": "a"}\n'),  # torn last line with its newline
        (b'{"id": "a', [], b""),  # only a torn line
        (b"", [], b""),
    ],
)
def test_read_jsonl_repairs_only_the_tail(tmp_path, content, ids, repaired):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    assert [r["id"] for r in read_jsonl(path)] == ids
    assert path.read_bytes() == content  # reading alone never changes the file
    assert [r["id"] for r in read_jsonl(path, repair=True)] == ids
    assert path.read_bytes() == repaired


def test_scoring_the_wrong_file_is_a_clear_error(tmp_path):
    preds = write_jsonl(tmp_path / "pred.jsonl", [{"id": "1", "question": "q", "answer": "a", "pred": "a"}])
    with pytest.raises(InputError, match=r"pred\.jsonl: line 1: no 'judgements'"):
        score_file("msvd-qa", preds)
    with pytest.raises(InputError, match=r"pred\.jsonl: line 1: no 'options'"):
        score_file("mvbench", preds)
