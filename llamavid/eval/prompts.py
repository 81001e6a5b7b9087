"""The judge prompts of the published LLaMA-VID evaluation, reproduced character for character.

Why exact: GPT-judged scores (MSVD-QA, MSRVTT-QA, ActivityNet-QA and the five Video-ChatGPT dimensions) are
only comparable with the paper's numbers when the judge model sees the same words. The published prompts
have odd spacing (no space before "------", two spaces in "is  a string", a missing space after
"not STRING.", the stray quote in "{''score': 4.8}"); all of it is kept on purpose. Do not "fix" these
strings. ``tests/test_judge.py`` compares them with the published files when a copy is available.

Source: https://github.com/dvlab-research/LLaMA-VID, directory ``llamavid/eval/`` (commit b3d3ae2b), which
itself takes them from Video-ChatGPT's ``quantitative_evaluation/``. Each constant names its file.

The user message is built as the published f-strings build it: a fixed opening line, the question/answer/
prediction lines, a blank line, then a fixed closing instruction (``*_USER_SUFFIX`` below).
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Shared by every published judge script: the opening line of the user message. -------------------
USER_PREFIX = "Please evaluate the following video-based question-answer pair:\n\n"

# --- Open-ended QA (yes/no + score). ---------------------------------------------------------------
# From llamavid/eval/eval_msvd_qa.py (MSVD-QA and MSRVTT-QA); llamavid/eval/eval_activitynet_qa.py has
# the identical text.
QA_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. "
    "Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
# From llamavid/eval/eval_msvd_qa.py (same in eval_activitynet_qa.py).
QA_USER_SUFFIX = (
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
    "indicating the highest meaningful match. "
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value "
    "of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
)

# --- Video-ChatGPT benchmark, 1: correctness of information. ------------------------------------------
# From llamavid/eval/evaluate_benchmark_1_correctness.py
CORRECTNESS_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the factual accuracy of generative outputs for video-based "
    "question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they are factually "
    "consistent. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the factual consistency between the predicted answer and the correct answer. The predicted answer "
    "should not contain any misinterpretations or misinformation.\n"
    "- The predicted answer must be factually accurate and align with the video content.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the factual accuracy of the prediction compared to the answer."
)
# From llamavid/eval/evaluate_benchmark_1_correctness.py
CORRECTNESS_USER_SUFFIX = (
    "Provide your evaluation only as a factual accuracy score where the factual accuracy score is an integer value "
    "between 0 and 5, with 5 indicating the highest level of factual consistency. "
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the "
    "factual accuracy score in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}."
)

# --- Video-ChatGPT benchmark, 2: detail orientation. ------------------------------------------------
# From llamavid/eval/evaluate_benchmark_2_detailed_orientation.py
DETAIL_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the detail orientation of generative outputs for "
    "video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine its level of detail, "
    "considering both completeness and specificity. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Check if the predicted answer covers all major points from the video. The response should not leave out any "
    "key aspects.\n"
    "- Evaluate whether the predicted answer includes specific details rather than just generic points. It should "
    "provide comprehensive information that is tied to specific elements of the video.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Provide a single evaluation score that reflects the level of detail orientation of the prediction, considering "
    "both completeness and specificity."
)
# From llamavid/eval/evaluate_benchmark_2_detailed_orientation.py
DETAIL_USER_SUFFIX = (
    "Provide your evaluation only as a detail orientation score where the detail orientation score is an integer value "
    "between 0 and 5, with 5 indicating the highest level of detail orientation. "
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the "
    "detail orientation score in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}."
)

# --- Video-ChatGPT benchmark, 3: contextual understanding. -------------------------------------------
# From llamavid/eval/evaluate_benchmark_3_context.py
CONTEXT_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the contextual understanding of generative outputs for "
    "video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if the generated response "
    "aligns with the overall context of the video content. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Evaluate whether the predicted answer aligns with the overall context of the video content. It should not "
    "provide information that is out of context or misaligned.\n"
    "- The predicted answer must capture the main themes and sentiments of the video.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Provide your evaluation of the contextual understanding of the prediction compared to the answer."
)
# From llamavid/eval/evaluate_benchmark_3_context.py
CONTEXT_USER_SUFFIX = (
    "Provide your evaluation only as a contextual understanding score where the contextual understanding score is an "
    "integer value between 0 and 5, with 5 indicating the highest level of contextual understanding. "
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is "
    "contextual understanding score in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}."
)

# --- Video-ChatGPT benchmark, 4: temporal understanding. --------------------------------------------
# From llamavid/eval/evaluate_benchmark_4_temporal.py
TEMPORAL_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the temporal understanding of generative outputs for "
    "video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they correctly reflect the "
    "temporal sequence of events in the video content. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the temporal consistency between the predicted answer and the correct answer. The predicted answer "
    "should correctly reflect the sequence of events or details as they are presented in the video content.\n"
    "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
    "- Evaluate the temporal accuracy of the prediction compared to the answer."
)
# From llamavid/eval/evaluate_benchmark_4_temporal.py
TEMPORAL_USER_SUFFIX = (
    "Provide your evaluation only as a temporal accuracy score where the temporal accuracy score is an integer value "
    "between 0 and 5, with 5 indicating the highest level of temporal consistency. "
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the "
    "temporal accuracy score in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}."
)

# --- Video-ChatGPT benchmark, 5: consistency (two questions, one answer, two predictions). ------------
# From llamavid/eval/evaluate_benchmark_5_consistency.py
CONSISTENCY_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar "
    "video-based question-answer pairs. "
    "You will be given two very similar questions, a common answer common to both the questions and predicted answers "
    "for the two questions ."
    "Your task is to compare the predicted answers for two very similar question, with a common correct answer and "
    "determine if they are consistent. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted answers "
    "should correspond to the correct answer and to each other, and should not contain any contradictions or "
    "significant differences in the conveyed information.\n"
    "- Both predicted answers must be consistent with each other and the correct answer, in terms of the information "
    "they provide about the video content.\n"
    "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the conveyed "
    "information.\n"
    "- Evaluate the consistency of the two predicted answers compared to the correct answer."
)
# From llamavid/eval/evaluate_benchmark_5_consistency.py
CONSISTENCY_USER_SUFFIX = (
    "Provide your evaluation only as a consistency score where the consistency score is an integer value between 0 and "
    "5, with 5 indicating the highest level of consistency. "
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value is the "
    "consistency score in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}."
)


@dataclass(frozen=True)
class JudgePrompt:
    """One published judge prompt: which dimension it scores and whether it also asks for yes/no."""

    dimension: str
    source: str
    system: str
    user_suffix: str
    wants_yes_no: bool = False
    two_questions: bool = False


PUBLISHED_PROMPTS: dict[str, JudgePrompt] = {
    p.dimension: p
    for p in (
        JudgePrompt("qa", "llamavid/eval/eval_msvd_qa.py", QA_SYSTEM, QA_USER_SUFFIX, wants_yes_no=True),
        JudgePrompt("correctness", "llamavid/eval/evaluate_benchmark_1_correctness.py", CORRECTNESS_SYSTEM,
                    CORRECTNESS_USER_SUFFIX),
        JudgePrompt("detail", "llamavid/eval/evaluate_benchmark_2_detailed_orientation.py", DETAIL_SYSTEM,
                    DETAIL_USER_SUFFIX),
        JudgePrompt("context", "llamavid/eval/evaluate_benchmark_3_context.py", CONTEXT_SYSTEM, CONTEXT_USER_SUFFIX),
        JudgePrompt("temporal", "llamavid/eval/evaluate_benchmark_4_temporal.py", TEMPORAL_SYSTEM,
                    TEMPORAL_USER_SUFFIX),
        JudgePrompt(
            "consistency",
            "llamavid/eval/evaluate_benchmark_5_consistency.py",
            CONSISTENCY_SYSTEM,
            CONSISTENCY_USER_SUFFIX,
            two_questions=True,
        ),
    )
}


def build_messages(
    dimension: str,
    question: str,
    answer: str,
    pred: str,
    *,
    question2: str | None = None,
    pred2: str | None = None,
) -> list[dict[str, str]]:
    """The chat messages the published script sends for one item, byte for byte.

    Values are inserted with ``str()`` exactly as the published f-strings do. For ``consistency`` give
    ``question2`` and ``pred2``; the caller decides which text goes in "Question 2" (the published script
    puts Q1 there by mistake; see ``judge.judge_predictions``).
    """
    prompt = PUBLISHED_PROMPTS.get(dimension)
    if prompt is None:
        raise ValueError(f"unknown judge dimension {dimension!r}; known: {', '.join(PUBLISHED_PROMPTS)}")
    if prompt.two_questions:
        body = (
            f"Question 1: {question}\n"
            f"Question 2: {question2}\n"
            f"Correct Answer: {answer}\n"
            f"Predicted Answer to Question 1: {pred}\n"
            f"Predicted Answer to Question 2: {pred2}\n\n"
        )
    else:
        body = f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {pred}\n\n"
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": USER_PREFIX + body + prompt.user_suffix},
    ]
