"""The fixed sets of values some options take, kept free of heavy imports so that the CLI's ``--help``
can list them without loading torch."""

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE_CHOICES = ("8bit", "4bit")
SUMMARY_STYLES = ("brief", "detailed")
KV_CACHE_CHOICES = ("auto", "full", "int8", "int4", "offload")
MCQ_MODES = ("generate", "likelihood")  # how `llamavid eval` answers multiple-choice items
# The languages Whisper transcribes (its codes, as faster-whisper lists them; tests/test_asr.py checks the two
# agree), here so that a language is checked at the edge without loading the speech recognizer.
WHISPER_LANGUAGES = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de", "el", "en",
    "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht", "hu", "hy", "id", "is",
    "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn",
    "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk",
    "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl", "tr", "tt", "uk", "ur", "uz",
    "vi", "yi", "yo", "zh", "yue",
)
DEFAULT_ASR_MODEL = "base"  # chosen by measurement (llamavid.media.asr's docstring, docs/PERFORMANCE.md)
SUBTITLE_KEYWORDS = ("speech", "none")  # --subtitles speech: the transcript, whatever else; none: no subtitles
