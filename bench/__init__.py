"""Benchmarks of the bridge: ``python -m bench`` (see ``bench/run.py`` and docs/benchmarks.md)."""
