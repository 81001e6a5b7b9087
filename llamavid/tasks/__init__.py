"""What users ask for, as library functions taking callbacks and returning records: ``qa`` (``ask``,
``answer_about``, ``answer_questions``, the answer record), ``chat``, ``summary``, ``chapters``,
``evidence``, ``batch``.
"""
