"""Benchmarks: each module has ``main(argv)`` and prints its figures (never asserts them)."""
