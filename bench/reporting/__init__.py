"""bench/RESULTS.md and its plots, from the results the experiments saved."""
