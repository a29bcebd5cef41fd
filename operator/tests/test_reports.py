"""The per-pod report annotation: round trips, compression, garbage."""

from __future__ import annotations

import pytest
from saigon_contract.reports import GZIP_ABOVE, AdapterReport, PodReport, ReportTooLarge


def test_round_trip() -> None:
    report = PodReport(
        {
            "user_1": AdapterReport(
                "Loaded", target="v1", version="v1", digest="d" * 64, loaded_at="2026-01-01T00:00:00Z"
            )
        },
        synced=True,
    )
    text = report.encode()
    assert '"loadedAt":"2026-01-01T00:00:00Z"' in text
    assert PodReport.decode(text) == report


def test_large_reports_are_compressed_and_still_round_trip() -> None:
    adapters = {
        f"user_{i}": AdapterReport(
            "Loaded", target="v1", version="v1", digest=f"{i:064x}", loaded_at="2026-01-01T00:00:00Z"
        )
        for i in range(2000)
    }
    text = PodReport(adapters).encode()
    assert text.startswith("gz:")
    assert len(text) < 200 * 1024  # 2,000 adapters fit the annotation budget
    assert PodReport.decode(text).adapters == adapters
    assert len(PodReport({"user_1": AdapterReport("Loaded")}).encode()) < GZIP_ABOVE


def test_a_decode_after_the_previous_keeps_the_unchanged_entries() -> None:
    loaded = {f"user_{i}": AdapterReport("Loaded", target="v1", version="v1") for i in range(3)}
    first = PodReport.decode(PodReport(loaded).encode())
    changed = dict(loaded, user_1=AdapterReport("Failed", target="v2", version="v1", reason="DigestMismatch"))
    changed.pop("user_2")
    second = PodReport.decode(PodReport(changed).encode(), first)
    assert second == PodReport(changed)
    assert second.adapters["user_0"] is first.adapters["user_0"], "an unchanged entry is the same object"
    assert second.adapters["user_1"].reason == "DigestMismatch" and "user_2" not in second.adapters
    assert PodReport.decode("garbage", first) == PodReport(), "a garbled report still reads as empty"


def test_reports_over_the_budget_are_refused() -> None:
    import secrets

    adapters = {f"user_{i}": AdapterReport("Failed", target="v1", error=secrets.token_hex(200)) for i in range(1000)}
    with pytest.raises(ReportTooLarge):
        PodReport(adapters).encode()


@pytest.mark.parametrize(
    "text", [None, "", "{", "gz:!!!", '{"version": 99}', '{"version":1,"adapters":{"x":{"state":"Bogus"}}}']
)
def test_garbage_reads_as_empty(text: str | None) -> None:
    assert PodReport.decode(text).adapters == {}
