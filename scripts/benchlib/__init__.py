"""Helpers of ``scripts/bench.py``: result records, timing, memory and synthetic data."""
