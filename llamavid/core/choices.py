"""The fixed sets of values some options take, kept free of heavy imports so that the CLI's ``--help``
can list them without loading torch."""

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE_CHOICES = ("8bit", "4bit")
SUMMARY_STYLES = ("brief", "detailed")
KV_CACHE_CHOICES = ("auto", "full", "int8", "int4", "offload")
MCQ_MODES = ("generate", "likelihood")  # how `llamavid eval` answers multiple-choice items
