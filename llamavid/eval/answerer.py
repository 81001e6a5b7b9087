"""Benchmark items answered by llamavid: ``video_answerer``, the ``answer_batch_fn`` that
``llamavid.eval.run_predictions`` calls with the items of one video (``llamavid eval``, the demo
evaluation). The items go through the same path as every question (``llamavid.tasks.qa.answer_about``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.choices import MCQ_MODES
from ..core.errors import LlamaVidError
from ..core.options import AskOptions, check_choice
from ..tasks.qa import QUESTIONS_PER_BATCH, Question, answer_about
from .benchmarks import OPTION_LETTERS


def check_mcq_mode(mcq: str) -> str:
    """``mcq`` must be one of ``MCQ_MODES`` (checked before a model is loaded)."""
    return check_choice("mcq", mcq, MCQ_MODES)


def video_answerer(model, options: AskOptions, *, callbacks: Callbacks = NO_CALLBACKS,
                   questions_per_batch: int = QUESTIONS_PER_BATCH, mcq: str = "generate"):
    """``answer_batch_fn`` for ``llamavid.eval.run_predictions``: items of one video (anything with
    ``.video`` and ``.question``) -> per item its answer text, or the error that stopped it.

    ``mcq``: how multiple-choice items (``kind == "choice"``, with ``options``) are answered: "generate"
    asks the formatted question (options listed, answer with a letter) and generates the reply;
    "likelihood" asks the bare question (``extra["raw_question"]``), scores every option as the answer
    (``AskOptions.choices``) and replies with the best option's letter.
    """
    check_mcq_mode(mcq)

    def question_for(item: Any) -> Question:
        if mcq == "likelihood" and getattr(item, "kind", None) == "choice" and getattr(item, "options", None):
            raw = (getattr(item, "extra", None) or {}).get("raw_question") or item.question
            return Question(raw, options.replace(choices=tuple(item.options)))
        return Question(item.question, options)

    def answer(items: Sequence[Any]) -> list[str | LlamaVidError]:
        results: list[str | LlamaVidError | None] = [None] * len(items)
        asked, questions = [], []
        for k, item in enumerate(items):
            try:
                questions.append(question_for(item))
                asked.append(k)
            except LlamaVidError as exc:  # e.g. an item listing the same option twice
                results[k] = exc
        outcomes = answer_about(model, items[0].video, questions, callbacks=callbacks,
                                questions_per_batch=questions_per_batch) if questions else []
        for k, outcome in zip(asked, outcomes):
            if not outcome.ok:
                results[k] = outcome.error
            elif outcome.answer.choices is None:
                results[k] = outcome.answer.text
            else:  # the chosen option's letter, as the multiple-choice scorer reads it
                texts = [c.choice for c in outcome.answer.choices]
                results[k] = OPTION_LETTERS[texts.index(outcome.answer.text)]
        return results  # type: ignore[return-value]

    return answer
