"""Benchmarks of the executor daemon: they print figures, they are not tests.

`make bench` (or `python -m bench`) runs every scenario of issue 5 at full size, prints a table and
rewrites `BENCHMARKS.md`; `tests/test_bench_smoke.py` runs each scenario once at a tiny size so
that none of them can rot. The raw-SQL baselines (`raw.py`) and the peers (`peers.py`) run in the
same process run as the daemon, so that the ratios between them hold on any machine.
"""
