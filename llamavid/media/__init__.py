"""Media files: probing and decoding videos and images into sampled frames (``video``), and subtitles
(``subtitles``: .srt files, sidecars, embedded streams, the one rule of which apply, frames they belong to).
"""
