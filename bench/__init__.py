"""Benchmarks (``make bench``): ratios against same-run baselines; not part of the test suite."""
