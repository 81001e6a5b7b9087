"""Datasets made here: the synthetic video-QA set."""
