"""Throughput benchmarks (never part of the test suite except smoke tests)."""
