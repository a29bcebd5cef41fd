"""Per-version request figures (promotion gates): counts, quantiles and a bounded memory."""

from __future__ import annotations

from saigon_runtime.server.version_stats import VersionStats


def test_counts_errors_and_quantiles_per_version() -> None:
    stats = VersionStats()
    for i in range(100):
        stats.record("user_a", "v2", ok=True, latency_s=(i + 1) / 1000)
    stats.record("user_a", "v2", ok=False)
    stats.record("user_a", "v1", ok=True, latency_s=0.5)
    stats.record("user_b", "v1", ok=True, latency_s=0.5)
    v1, v2 = stats.of("user_a")
    assert (v1.version, v1.requests, v1.errors, v1.p99_ms) == ("v1", 1, 0, 500.0)
    assert (v2.version, v2.requests, v2.errors) == ("v2", 101, 1)
    assert v2.p50_ms == 51.0 and v2.p99_ms == 99.0
    assert stats.of("user_c") == []


def test_memory_stays_bounded() -> None:
    stats = VersionStats(max_versions=3)
    for i in range(5):
        stats.record(f"user_{i}", "v1", ok=True, latency_s=0.01)
    assert [stats.of(f"user_{i}") != [] for i in range(5)] == [False, False, True, True, True]
