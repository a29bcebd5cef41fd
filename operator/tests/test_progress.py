"""The progress watchdog behind the operator's /healthz."""

from __future__ import annotations

from fake_clock import Clock
from saigon_operator.progress import Progress


def test_work_waiting_with_no_handler_finishing_is_a_stall() -> None:
    clock = Clock()
    progress = Progress(60, clock)
    progress.noticed(("ns", "a"), 1)
    clock.now += 59
    assert progress.stalled() is None
    clock.now += 2
    assert progress.stalled() == "1 objects wait, and no handler has finished for 61s"
    progress.finished(("ns", "a"), 1)
    assert progress.stalled() is None and progress.pending == 0


def test_a_long_backlog_is_healthy_while_handlers_keep_finishing() -> None:
    clock = Clock()
    progress = Progress(60, clock)
    for i in range(100):
        progress.noticed(("ns", f"a{i}"), 1)
    for i in range(99):
        clock.now += 30
        progress.finished(("ns", f"a{i}"), 1)
        assert progress.stalled() is None
    clock.now += 61
    assert progress.stalled() is not None


def test_nothing_to_do_is_healthy_however_long() -> None:
    clock = Clock()
    progress = Progress(60, clock)
    progress.noticed(("ns", "a"), 3)
    progress.finished(("ns", "a"), 3)
    clock.now += 10_000
    assert progress.stalled() is None


def test_a_generation_already_handled_is_not_waiting_and_a_newer_one_is() -> None:
    clock = Clock()
    progress = Progress(60, clock)
    progress.finished(("ns", "a"), 2)  # the handler may finish before the informer sees the object
    progress.noticed(("ns", "a"), 2)
    assert progress.pending == 0
    progress.noticed(("ns", "a"), 3)
    progress.finished(("ns", "a"), 2)  # an older generation's handler does not settle the newer one
    assert progress.pending == 1


def test_deleted_and_vanished_objects_stop_waiting() -> None:
    progress = Progress(60, Clock())
    progress.noticed(("ns", "a"), 1)
    progress.noticed(("ns", "b"), 1)
    progress.noticed(("other", "c"), 1)
    progress.forget(("ns", "a"))
    progress.retain("ns", {("ns", "x")})
    assert progress.pending == 1  # only other/c: a relist of ns does not touch other namespaces
