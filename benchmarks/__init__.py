"""Benchmarks: suites, results, leaderboards and performance measurements."""
