"""Floodgate's worker runtime: a fast pool with time limits, a base task with a
redelivery bound, per-queue prefetch, and start-up checks. Knows no domain."""
