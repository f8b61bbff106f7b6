"""Configs of ``python -m alphallm.paper_small`` (Tables 2, 3 and 7 at small scale)."""
