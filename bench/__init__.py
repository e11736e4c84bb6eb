"""pairloss benchmarks: ``python -m bench [--quick]`` (CLI) or ``pytest bench`` (pytest-benchmark)."""
