"""Floodgate benchmarks: guard overhead, overload with and without the guard,
Retry-After honesty, wait limits, and the drain speed of the safe defaults.

Run everything with ``make bench``; one experiment with
``.venv/bin/python -m bench.run_all --only b --broker redis``.
Results go to bench/RESULTS.md, bench/results/*.json and bench/plots/*.png;
logs and raw data to bench/out/ (ignored by git).
"""
