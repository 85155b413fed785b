"""Benchmark harness: zkv against Redis (see bench/README.md; run bench/run.py)."""
