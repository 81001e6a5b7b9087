"""The path of every question: ``prepare`` an input (timeline and subtitles, resolved once, before any
decoding), ``plan`` each question (``planning``: frames, context fit, answer room, KV cache; refusals
happen here), ``materialize`` its features (encode or open them). ``inputs`` holds what answering reads.
"""
