import asyncio
import itertools

import pytest
from saigon_contract.workqueue import KeyedQueue


async def test_marks_coalesce_and_a_key_never_runs_twice_at_once() -> None:
    runs: list[str] = []
    running: set[str] = set()
    release = asyncio.Event()

    async def work(key: str) -> None:
        assert key not in running
        running.add(key)
        runs.append(key)
        await release.wait()
        running.discard(key)

    queue: KeyedQueue[str] = KeyedQueue(work)
    queue.mark("a")
    queue.mark("a")  # not started yet: the same run
    await asyncio.sleep(0)
    queue.mark("a")
    queue.mark("a")  # marked while running: one more run afterwards
    queue.mark("b")
    await asyncio.sleep(0)
    release.set()
    await queue.idle()
    assert sorted(runs) == ["a", "a", "b"]


async def test_a_delay_gathers_marks_into_one_run() -> None:
    runs: list[int] = []

    async def work(key: int) -> None:
        runs.append(key)

    queue: KeyedQueue[int] = KeyedQueue(work, delay_s=0.05)
    for _ in range(5):
        queue.mark(1)
        await asyncio.sleep(0.001)
    await queue.idle()
    assert runs == [1]


async def test_mark_later_backs_off_and_a_mark_runs_now_instead() -> None:
    runs: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def work(key: str) -> None:
        runs.append((key, loop.time() - start))

    queue: KeyedQueue[str] = KeyedQueue(work)
    queue.mark_later("slow", 0.05)
    queue.mark_later("dropped", 0.05)
    queue.forget("dropped")
    queue.mark_later("now", 30)
    queue.mark("now")
    await asyncio.sleep(0.1)
    await queue.idle()
    assert [key for key, _ in runs] == ["now", "slow"]
    assert runs[1][1] >= 0.05
    await queue.close()


async def test_one_keys_error_does_not_stop_the_others() -> None:
    done: list[str] = []

    async def work(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        done.append(key)

    queue: KeyedQueue[str] = KeyedQueue(work)
    queue.mark("bad")
    queue.mark("good")
    await queue.idle()
    queue.mark("bad")
    await queue.idle()
    assert done == ["good"]


async def test_marks_from_another_thread_run_on_the_queues_loop() -> None:
    loop = asyncio.get_running_loop()
    ran = asyncio.Event()
    seen: list[asyncio.AbstractEventLoop] = []

    async def work(key: str) -> None:
        seen.append(asyncio.get_running_loop())
        ran.set()

    queue: KeyedQueue[str] = KeyedQueue(work)
    await asyncio.to_thread(queue.mark, "from-a-thread")
    await asyncio.wait_for(ran.wait(), 10)
    await asyncio.to_thread(queue.mark_later, "later", 30)
    await asyncio.to_thread(queue.forget, "later")
    await asyncio.sleep(0)
    assert seen == [loop]
    await queue.close()


async def test_a_key_marked_without_pause_runs_once_per_delay() -> None:
    """Marks that keep arriving while the work runs (a model's status in a bulk apply) wait the
    delay before each rerun: back to back, a 0.05 s write would run about 18 times here."""
    started: list[float] = []
    loop = asyncio.get_running_loop()

    async def work(key: int) -> None:
        started.append(loop.time())
        await asyncio.sleep(0.05)

    queue: KeyedQueue[int] = KeyedQueue(work, delay_s=0.2)
    until = loop.time() + 1.0
    while loop.time() < until:
        queue.mark(1)
        await asyncio.sleep(0.01)
    await queue.idle()
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert 2 <= len(started) <= 5, started  # 5 at most: one run per delay plus its work
    assert min(gaps) >= 0.24, gaps


async def test_a_limit_bounds_the_keys_at_work_and_the_rest_take_turns_in_order() -> None:
    running: set[int] = set()
    most = 0
    order: list[int] = []

    async def work(key: int) -> None:
        nonlocal most
        running.add(key)
        most = max(most, len(running))
        order.append(key)
        await asyncio.sleep(0.01)
        running.discard(key)

    queue: KeyedQueue[int] = KeyedQueue(work, limit=3)
    for key in range(10):
        queue.mark(key)
    queue.mark(7)  # already waiting: still one run
    queue.forget(9)  # dropped before its turn
    assert queue.waiting == 6
    await queue.idle()
    assert most == 3
    assert order == list(range(9))
    assert queue.waiting == 0
    with pytest.raises(ValueError, match="limit"):
        KeyedQueue(work, limit=0)
