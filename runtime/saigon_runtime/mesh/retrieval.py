"""Choosing the mesh nodes relevant to a query and rendering them as a compact, budgeted context.

Scoring: BM25 over each node's label and text, multiplied by the node's weight; then one hop of
expansion over edges, where a neighbour of a matching node scores `neighbour_decay` times that
node's score, times its own weight. A node keeps the best of its direct and neighbour scores.

BM25 is written out here rather than taken from bm25s or rank-bm25: a user's graph is capped at a
few thousand short nodes, so an inverted index in plain Python scores a query in well under a
millisecond, and neither package would add anything but a numpy/scipy dependency.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saigon_runtime.mesh.sanitize import neutralise, one_line
from saigon_runtime.mesh.schema import MeshGraph, MeshNode
from saigon_runtime.mesh.tokenizer import TokenCounter, make_token_counter, special_tokens

DEFAULT_MAX_NODES = 8
DEFAULT_MAX_TOKENS = 256
DEFAULT_NEIGHBOUR_DECAY = 0.5
BM25_K1 = 1.5
BM25_B = 0.75
# Label terms count twice: a label names what the node is about.
LABEL_BOOST = 2
RELATIONS_HEADER = "Relations:"
# A node truncated to fit the budget keeps at least this many words, or is left out.
_MIN_TRUNCATED_WORDS = 8

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an and are as at be but by do does for from has have how i in is it its me my of on or "
    "so that the their them there these this those to was we were what when where which who "
    "why will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.casefold()) if w not in _STOPWORDS]


@dataclass(frozen=True)
class ScoredNode:
    index: int  # position in graph.nodes
    node: MeshNode
    score: float
    direct: bool  # matched the query itself, rather than pulled in as a neighbour


@dataclass(frozen=True)
class NodeLine:
    label: str  # neutralised, on one line
    body: str
    line: str  # as rendered in the context
    tokens: int  # of `line`, by the counter that rendered it


@dataclass(frozen=True)
class MeshContext:
    text: str  # rendered context: untrusted data, already neutralised, without delimiters
    node_ids: tuple[str, ...]  # nodes included, in rendered order
    tokens: int  # size of `text` by the counter used


class _Index:
    """Inverted index and adjacency for one graph; built once per graph object."""

    def __init__(self, graph: MeshGraph):
        self.postings: dict[str, list[tuple[int, int]]] = {}
        self.lengths: list[int] = []
        for i, node in enumerate(graph.nodes):
            doc = terms(node.label) * LABEL_BOOST + terms(node.text)
            self.lengths.append(len(doc))
            for term, tf in Counter(doc).items():
                self.postings.setdefault(term, []).append((i, tf))
        self.avg_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        position = {node.id: i for i, node in enumerate(graph.nodes)}
        self.neighbours: list[set[int]] = [set() for _ in graph.nodes]
        for edge in graph.edges:
            s, t = position[edge.source], position[edge.target]
            if s != t:
                self.neighbours[s].add(t)
                self.neighbours[t].add(s)

    def bm25(self, query_terms: Sequence[str]) -> dict[int, float]:
        n = len(self.lengths)
        scores: dict[int, float] = {}
        for term in set(query_terms):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = math.log(1.0 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for i, tf in postings:
                norm = 1.0 - BM25_B + BM25_B * self.lengths[i] / self.avg_length
                scores[i] = scores.get(i, 0.0) + idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)
        return scores


def select_nodes(
    graph: MeshGraph,
    query: str,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    neighbour_decay: float = DEFAULT_NEIGHBOUR_DECAY,
) -> list[ScoredNode]:
    """The nodes relevant to `query`, best first; empty when no node matches a query term."""
    index = graph.derived("bm25_index", _Index)
    nodes = graph.nodes
    direct = {i: s * nodes[i].weight for i, s in index.bm25(terms(query)).items()}
    best: dict[int, tuple[float, bool]] = {i: (s, True) for i, s in direct.items() if s > 0}
    for i, score in direct.items():
        for j in index.neighbours[i]:
            pulled = neighbour_decay * score * nodes[j].weight
            if pulled > best.get(j, (0.0, False))[0]:
                best[j] = (pulled, False)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    return [ScoredNode(i, nodes[i], score, is_direct) for i, (score, is_direct) in ranked[:max_nodes]]


def render_context(
    graph: MeshGraph,
    selected: Sequence[ScoredNode],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    count_tokens: TokenCounter | None = None,
    forbidden_tokens: Sequence[str] = (),
    memo: dict[int, NodeLine] | None = None,
) -> MeshContext | None:
    """Render `selected` (best first) as one line per node plus relation lines among them,
    adding nodes while the whole text stays within `max_tokens`. None when nothing fits.

    `memo` keeps each node's rendered line and its token count across calls (one per graph and
    counter: build_context keeps it with the graph), so a user's next request counts only the text
    as a whole."""
    count = count_tokens or make_token_counter(None)
    node_lines: list[str] = []
    chosen: list[ScoredNode] = []
    # Each line is counted once (plus one token per line break), not the growing text after every
    # line: that was quadratic in the lines. The exact count of the final text has the last word.
    used = 0

    def clean(text: str) -> str:
        return neutralise(one_line(text), forbidden_tokens)

    for item in selected:
        rendered = memo.get(item.index) if memo is not None else None
        if rendered is None:
            label, body = clean(item.node.label), clean(item.node.text)
            line = f"- {label}: {body}" if body else f"- {label}"
            rendered = NodeLine(label, body, line, count(line))
            if memo is not None:
                memo[item.index] = rendered
        label, body, line = rendered.label, rendered.body, rendered.line
        cost = rendered.tokens + (1 if node_lines else 0)
        if used + cost <= max_tokens:
            node_lines.append(line)
            chosen.append(item)
            used += cost
            continue
        truncated = _truncate_to_fit(node_lines, f"- {label}:", body.split(), count, max_tokens)
        if truncated is not None:
            node_lines.append(truncated)
            chosen.append(item)
        break
    while node_lines and count(_join(node_lines)) > max_tokens:
        node_lines.pop()
        chosen.pop()
    if not chosen:
        return None

    text = _join(node_lines)
    used = count(text)
    chosen_ids = {item.node.id for item in chosen}
    label_of = {item.node.id: clean(item.node.label) for item in chosen}
    relation_lines: list[str] = []
    for edge in graph.edges:
        if edge.source in chosen_ids and edge.target in chosen_ids and edge.source != edge.target:
            line = f"- {label_of[edge.source]} {clean(edge.relation)} {label_of[edge.target]}"
            cost = count(line) + 1 + (0 if relation_lines else count(RELATIONS_HEADER) + 1)
            if used + cost > max_tokens:
                break
            relation_lines.append(line)
            used += cost
    while relation_lines and count(_join([*node_lines, RELATIONS_HEADER, *relation_lines])) > max_tokens:
        relation_lines.pop()
    if relation_lines:
        text = _join([*node_lines, RELATIONS_HEADER, *relation_lines])
    return MeshContext(text=text, node_ids=tuple(item.node.id for item in chosen), tokens=count(text))


def build_context(
    graph: MeshGraph | None,
    query: str,
    *,
    tokenizer: Any | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_nodes: int = DEFAULT_MAX_NODES,
    neighbour_decay: float = DEFAULT_NEIGHBOUR_DECAY,
) -> MeshContext | None:
    """Select and render the context for `query`; None when the graph is absent or nothing is relevant.

    Tokens are counted with `tokenizer` (see saigon_runtime.mesh.tokenizer), or by whitespace.
    """
    if graph is None or not graph.nodes or max_tokens <= 0:
        return None
    selected = select_nodes(graph, query, max_nodes=max_nodes, neighbour_decay=neighbour_decay)
    if not selected:
        return None
    # Keyed by the tokenizer's identity, which the memo holds on to (so the id is never reused).
    owner, memo = graph.derived(f"node_lines:{id(tokenizer)}", lambda _: (tokenizer, dict[int, NodeLine]()))
    return render_context(
        graph,
        selected,
        memo=memo if owner is tokenizer else None,
        max_tokens=max_tokens,
        count_tokens=make_token_counter(tokenizer),
        forbidden_tokens=special_tokens(tokenizer),
    )


def _join(lines: Sequence[str]) -> str:
    return "\n".join(lines)


def _truncate_to_fit(lines: list[str], head: str, words: list[str], count: TokenCounter, max_tokens: int) -> str | None:
    """The longest `head + words[:k] + "…"` that fits after `lines`, by binary search on k."""
    lo, hi, best = _MIN_TRUNCATED_WORDS, len(words) - 1, None
    while lo <= hi:
        k = (lo + hi) // 2
        line = f"{head} {' '.join(words[:k])} …"
        if count(_join([*lines, line])) <= max_tokens:
            best, lo = line, k + 1
        else:
            hi = k - 1
    return best
