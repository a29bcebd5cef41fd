"""User store benchmark: mesh retrieval from PostgreSQL and cross-replica visibility of writes.

Fills a real PostgreSQL (Debian's package, started in a temporary directory, or `--dsn`) with
`--users` meshes of `--nodes` nodes each, then measures on two store instances ("replicas", each
with its own cache and LISTEN connection, as two runtime pods have):

- the latency a request adds for its mesh context: fetch (or cache hit) + validation + retrieval
  + rendering within the token budget, counted with a real BPE tokenizer; cold (the first request
  of a user on a replica: a database read) and warm (the next ones: the replica's cache);
- write -> visible: a write through replica A until replica B's read returns it.

    python -m saigon_runtime.bench.userstore [--users 10000] [--nodes 200] [--requests 2000]
        [--writes 200] [--dsn postgresql://...] [--json out.json]

Not a test: nothing is asserted; the smoke test runs it small.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from saigon_runtime.bench.load import percentile
from saigon_runtime.mesh.retrieval import DEFAULT_MAX_TOKENS, build_context
from saigon_runtime.userstore.postgres import PostgresUserStore

COMMON = (
    "goat river bread soup boat garden music piano travel budget coffee tea bike mountain "
    "book film cat dog recipe oven market city train doctor school project meeting code "
    "python garden tomato salad friend sister brother holiday beach winter summer rain"
).split()
# A person's notes use a few common words often and many rare ones: Zipf-distributed draws from
# the common words and 2,000 rarer ones (with only the common words, every query term would
# match a third of the nodes, which no real graph does).
WORDS = COMMON + [f"{COMMON[i % len(COMMON)]}{i}" for i in range(2000)]
_ZIPF = [1.0 / (rank + 1) for rank in range(len(WORDS))]


def words(rng: random.Random, k: int) -> list[str]:
    return rng.choices(WORDS, weights=_ZIPF, k=k)


@dataclass
class Figures:
    users: int
    nodes: int
    fill_s: float
    cold_p50_ms: float
    cold_p99_ms: float
    warm_p50_ms: float
    warm_p99_ms: float
    visible_p50_ms: float
    visible_p99_ms: float
    visible_max_ms: float
    requests: int
    writes: int


def make_graph(rng: random.Random, nodes: int, marker: str = "") -> dict[str, Any]:
    items = [
        {"id": f"n{i}", "label": f"{words(rng, 1)[0]} {i}",
         "text": " ".join(words(rng, rng.randint(6, 12))) + (f" {marker}" if marker and i == 0 else ""),
         "weight": round(rng.uniform(0.5, 2.0), 2)}
        for i in range(nodes)
    ]  # fmt: skip
    edges = [{"source": f"n{i}", "target": f"n{rng.randrange(nodes)}", "relation": "related_to"} for i in range(nodes)]
    return {"nodes": items, "edges": edges}


def user_id(i: int) -> str:
    return f"u{i:06d}"


def fill(dsn: str, users: int, nodes: int, seed: int) -> float:
    """Every user's mesh, loaded with COPY (the schema comes from the store's migrations)."""
    PostgresUserStore(dsn).close()
    rng = random.Random(seed)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE saigon_user_mesh")
        with cur.copy("COPY saigon_user_mesh (user_id, graph) FROM STDIN") as copy:
            for i in range(users):
                copy.write_row((user_id(i), json.dumps(make_graph(rng, nodes))))
    return time.perf_counter() - started


def retrieval_ms(store: PostgresUserStore, user: str, query: str, tokenizer: Any) -> float:
    started = time.perf_counter()
    graph = store.get_mesh(user)
    build_context(graph, query, tokenizer=tokenizer, max_tokens=DEFAULT_MAX_TOKENS)
    return (time.perf_counter() - started) * 1000.0


def visibility_ms(a: PostgresUserStore, b: PostgresUserStore, user: str, nodes: int, marker: str) -> float:
    """A write through `a` until `b` (which has the user cached) reads it."""
    for _ in range(3):
        b.get_mesh(user)  # cached on b (after any notification of the previous round has passed)
    graph = make_graph(random.Random(marker), nodes, marker)
    started = time.perf_counter()
    a.put_mesh(user, graph)
    while True:
        seen = b.get_mesh(user)
        if seen is not None and seen.nodes[0].text.endswith(marker):
            return (time.perf_counter() - started) * 1000.0
        if time.perf_counter() - started > 10:
            raise TimeoutError("a write was not visible on the other replica within 10 s")
        time.sleep(0.0005)


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    from saigon_runtime.testing.postgres import running_postgres

    with running_postgres() as server:
        yield server.create_database("bench")


def run(*, users: int, nodes: int, requests: int, writes: int, dsn: str | None = None, seed: int = 0) -> Figures:
    from saigon_runtime.testing.tiny import make_tokenizer

    rng = random.Random(seed)
    with ExitStack() as stack:
        url = stack.enter_context(database(dsn))
        fill_s = fill(url, users, nodes, seed)
        tokenizer = make_tokenizer(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        a = PostgresUserStore(url, max_cached=max(16, requests))
        stack.callback(a.close)
        b = PostgresUserStore(url, max_cached=max(16, requests))
        stack.callback(b.close)
        sample = rng.sample(range(users), min(requests, users))
        queries = [" ".join(words(rng, 6)) for _ in sample]
        cold = [retrieval_ms(a, user_id(u), q, tokenizer) for u, q in zip(sample, queries, strict=True)]
        warm = [retrieval_ms(a, user_id(u), q, tokenizer) for u, q in zip(sample, queries, strict=True)]
        visible = [visibility_ms(a, b, user_id(rng.randrange(users)), nodes, f"mark{i}") for i in range(writes)]
    return Figures(
        users=users, nodes=nodes, fill_s=round(fill_s, 1),
        cold_p50_ms=_r(percentile(cold, 50)), cold_p99_ms=_r(percentile(cold, 99)),
        warm_p50_ms=_r(percentile(warm, 50)), warm_p99_ms=_r(percentile(warm, 99)),
        visible_p50_ms=_r(percentile(visible, 50)), visible_p99_ms=_r(percentile(visible, 99)),
        visible_max_ms=_r(max(visible) if visible else float("nan")), requests=len(cold), writes=len(visible),
    )  # fmt: skip


def _r(value: float) -> float:
    return round(value, 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000, help="users sampled for the retrieval figures")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--dsn", help="an existing database (default: start a PostgreSQL in a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run(users=args.users, nodes=args.nodes, requests=args.requests, writes=args.writes, dsn=args.dsn,
                  seed=args.seed)  # fmt: skip
    print(f"{figures.users} users x {figures.nodes} nodes in PostgreSQL (filled in {figures.fill_s}s)")
    print(f"mesh context per request, cold (database read): p50 {figures.cold_p50_ms} ms, p99 {figures.cold_p99_ms} ms")
    print(f"mesh context per request, warm (replica cache): p50 {figures.warm_p50_ms} ms, p99 {figures.warm_p99_ms} ms")
    print(f"write -> visible on the other replica ({figures.writes} writes): p50 {figures.visible_p50_ms} ms, "
          f"p99 {figures.visible_p99_ms} ms, max {figures.visible_max_ms} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
