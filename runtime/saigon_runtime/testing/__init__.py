"""Builders for tiny real models and adapters, used by tests and benchmarks (no downloads)."""
