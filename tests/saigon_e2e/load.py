"""Continuous load from real HTTP clients, for watching a promotion: every answer, its version and latency."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import requests

from saigon_e2e.world import ADMIN

VERSION_HEADER = "X-Saigon-Adapter-Version"


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    url: str
    status: int  # 0: no HTTP answer at all (connection refused, reset, timeout)
    versions: tuple[str, ...]  # every version the response names (the header, once per value)

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """`clients` threads, each with its own keep-alive session, sending round-robin to `urls`."""

    urls: Sequence[str]
    model: str
    clients: int = 4
    max_tokens: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _client(self, index: int) -> None:
        body = {"model": self.model, "prompt": "the cat sat", "max_tokens": self.max_tokens, "temperature": 0}
        n = index
        with requests.Session() as session:
            session.headers.update(ADMIN)  # inference auth is on in operator-built pods
            while not self._stop.is_set():
                url = self.urls[n % len(self.urls)]
                n += 1
                started = time.monotonic()
                try:
                    response = session.post(f"{url}/v1/completions", json=body, timeout=60)
                    status = response.status_code
                    # requests folds repeated headers into one comma-separated value.
                    raw = response.headers.get(VERSION_HEADER, "")
                    versions = tuple(v.strip() for v in raw.split(",")) if raw else ()
                    if status == 200:
                        response.json()["choices"][0]["text"]
                except (requests.RequestException, ValueError, KeyError):
                    status, versions = 0, ()
                answer = Answer(started, time.monotonic(), url, status, versions)
                with self._lock:
                    self.answers.append(answer)

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return started_between(self.answers, start, end)

    def after(self, start: float) -> list[Answer]:
        return self.between(start, float("inf"))


def _serve_load(
    urls: list[str], model: str, clients: int, max_tokens: int, ready: Any, stop: Any, out: Connection
) -> None:
    os.setsid()  # a scheduling group of its own (Linux's autogroup), apart from the benchmark's tools
    with Load(urls, model, clients, max_tokens) as load:
        ready.set()
        stop.wait()
    out.send(load.answers)


@dataclass
class LoadProcess:
    """The same load from a process of its own, as real clients are: a benchmark's own work meanwhile
    (polling status, running kubectl) then cannot hold the clients' GIL and pass for serving latency.
    It leads a session of its own, so the benchmark can lower its own process's CPU weight alone.
    Its answers are there once the block exits."""

    urls: Sequence[str]
    model: str
    clients: int = 4
    max_tokens: int = 4
    answers: list[Answer] = field(default_factory=list)

    def __enter__(self) -> LoadProcess:
        context = multiprocessing.get_context("spawn")
        self._stop, ready = context.Event(), context.Event()
        self._answers, send = context.Pipe(duplex=False)
        args = (list(self.urls), self.model, self.clients, self.max_tokens, ready, self._stop, send)
        self._process = context.Process(target=_serve_load, args=args, name="load", daemon=True)
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("the load process did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._answers.poll(180):
            self.answers = self._answers.recv()
        self._process.join(30)

    def between(self, start: float, end: float) -> list[Answer]:
        return started_between(self.answers, start, end)


def started_between(answers: Sequence[Answer], start: float, end: float) -> list[Answer]:
    return [a for a in answers if start <= a.started < end]


@dataclass(frozen=True)
class Summary:
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    versions: dict[str, int]

    def line(self) -> str:
        return (
            f"{self.requests} requests, {self.failed} failed, p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
            f"versions {self.versions}"
        )


def summarize(answers: Sequence[Answer]) -> Summary:
    latencies = sorted(a.latency_s * 1000 for a in answers) or [0.0]

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

    versions: dict[str, int] = {}
    for a in answers:
        key = ",".join(a.versions) or "-"
        versions[key] = versions.get(key, 0) + 1
    return Summary(len(answers), sum(1 for a in answers if a.status != 200), quantile(0.5), quantile(0.99), versions)
