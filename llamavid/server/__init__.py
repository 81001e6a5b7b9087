"""The OpenAI-compatible HTTP server, side by side as vLLM's entrypoints are: the application and how it
words errors (``app``), the request protocol (``protocol``), what media a request may read
(``media_access``), and the serving logic that batches concurrent questions (``service``).
"""
