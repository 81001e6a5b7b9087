"""Features: a video's vision-encoder output, made once (``encode``: video -> frames -> features, resumable,
locked) and kept in the ``.vidtok`` format (``vidtok``).
"""
