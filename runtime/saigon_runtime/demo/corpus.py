"""Seeded, template-based English documents for the demo model and its adapters.

A document is a question followed by a topic's answer, in one of the three layouts the runtime
can hand the model: the bare input (`Question\\nAnswer`), the plain chat layout
(`User: ...\\n\\nAssistant: ...`) and that layout with a mesh context block. The chat layouts
come from `saigon_runtime.mesh.prompt`, so the model is trained on exactly what it will see.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Iterator, Mapping

from saigon_runtime.demo.catalog import DEMO_MESHES
from saigon_runtime.demo.grammar import INTENTS, QUESTION_SLOTS, QUESTIONS, SHARED_SLOTS, TOPICS, Topic
from saigon_runtime.mesh.prompt import build_chat_prompt, build_prompt
from saigon_runtime.mesh.retrieval import ScoredNode, render_context
from saigon_runtime.mesh.schema import MeshEdge, MeshGraph, MeshNode

# Bump when the grammar, the layouts, the training recipe or the FULL scale change: it keys the
# demo cache, so a stale build is never reused.
GENERATOR_VERSION = "8"

BASE_TOPIC = "general"
# General answers are the base model's majority voice, but it also learns every topic's
# phrasing, so an adapter only has to shift which topic answers (measured: far more fluent
# adapters for the same training cost than with a 0.75 general share).
BASE_TOPIC_SHARE = 0.5

LAYOUT_WEIGHTS: Mapping[str, float] = {"plain": 0.55, "chat": 0.3, "context": 0.15}

_SLOT = re.compile(r"\{(\w+)\}")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")
_MAX_DEPTH = 4

_CONTEXT_NAMES = ("Alice", "Bob", "Carol", "Dan", "Eva", "Femi", "Hana", "Ivan")
_CONTEXT_FACTS = (
    "lives in a small town by the sea",
    "works as a teacher",
    "has a dog named Max",
    "likes green tea",
    "is learning to play the piano",
    "was born in the spring",
    "walks to work every day",
    "collects old maps",
)
_CONTEXT_RELATIONS = ("knows", "works with", "lives near", "likes", "owns")


def _context_pool() -> tuple[list[tuple[str, str]], list[str]]:
    """(label, text) nodes and relations: generic people, plus the demo users' own mesh nodes,
    so the model has seen context blocks like the ones the demo will retrieve."""
    nodes = [(name, f"{name} {fact}.") for name in _CONTEXT_NAMES for fact in _CONTEXT_FACTS]
    relations = list(_CONTEXT_RELATIONS)
    for graph in DEMO_MESHES.values():
        nodes += [(str(n["label"]), str(n.get("text", ""))) for n in graph["nodes"]]
        relations += [str(e["relation"]) for e in graph["edges"]]
    return nodes, sorted(set(relations))


_POOL_NODES, _POOL_RELATIONS = _context_pool()


def stable_seed(*parts: object) -> int:
    """A seed from `parts` that, unlike hash(), is the same in every process."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def expand(template: str, topic: Topic, rng: random.Random, depth: int = 0) -> str:
    def choose(match: re.Match[str]) -> str:
        name = match.group(1)
        choices = topic.slots.get(name) or SHARED_SLOTS.get(name)
        if not choices:
            raise KeyError(f"topic {topic.name!r} has no slot {name!r}")
        if depth >= _MAX_DEPTH:
            raise RecursionError(f"slot {name!r} nests too deeply")
        return expand(rng.choice(choices), topic, rng, depth + 1)

    return _SLOT.sub(choose, template)


def question_text(template: str, rng: random.Random) -> str:
    return _SLOT.sub(lambda m: rng.choice(QUESTION_SLOTS[m.group(1)]), template)


def all_questions() -> set[str]:
    """Every question the templates can produce."""
    out: set[str] = set()
    for template in (t for templates in QUESTIONS.values() for t in templates):
        names = _SLOT.findall(template)
        for values in itertools.product(*(QUESTION_SLOTS[n] for n in names)):
            out.add(_fill(template, iter(values)))
    return out


def _fill(template: str, values: Iterator[str]) -> str:
    return _SLOT.sub(lambda _: next(values), template)


def capitalise_sentences(text: str) -> str:
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def answer(topic: Topic, intent: str, rng: random.Random) -> str:
    sentences = [rng.choice(topic.answers[intent])]
    sentences += rng.sample(list(topic.extras), k=rng.choice((0, 1, 1, 2)))
    if rng.random() < 0.4:
        sentences.append(rng.choice(topic.closers))
    return capitalise_sentences(" ".join(expand(s, topic, rng) for s in sentences))


def mesh_context(rng: random.Random) -> str:
    """A context block body rendered by the runtime's own renderer from a random small graph."""
    picked = rng.sample(_POOL_NODES, k=rng.choice((1, 2, 3, 4)))
    nodes = [MeshNode(id=f"n{i}", label=label, text=text) for i, (label, text) in enumerate(picked)]
    edges = []
    if len(nodes) > 1 and rng.random() < 0.6:
        edges.append(MeshEdge(source="n0", target="n1", relation=rng.choice(_POOL_RELATIONS)))
    graph = MeshGraph(nodes=nodes, edges=edges)
    rendered = render_context(graph, [ScoredNode(i, node, 1.0, True) for i, node in enumerate(nodes)])
    assert rendered is not None
    return rendered.text


def document(topic: Topic, rng: random.Random) -> str:
    intent = rng.choice(INTENTS)
    question = question_text(rng.choice(QUESTIONS[intent]), rng)
    reply = answer(topic, intent, rng)
    layout = rng.choices(list(LAYOUT_WEIGHTS), weights=list(LAYOUT_WEIGHTS.values()))[0]
    if layout == "plain":
        return f"{question}\n{reply}"
    if layout == "chat":
        prompt = build_chat_prompt(None, [{"role": "user", "content": question}])
    else:
        prompt = build_prompt(None, question, context=mesh_context(rng))
    return f"{prompt} {reply}"


def topic_corpus(topic: str, n_docs: int, seed: int) -> list[str]:
    """`n_docs` documents answered entirely in `topic`'s voice."""
    rng = random.Random(stable_seed(seed, "topic", topic))
    return [document(TOPICS[topic], rng) for _ in range(n_docs)]


def base_corpus(n_docs: int, seed: int) -> list[str]:
    """Mostly general answers, with every other topic mixed in at an equal small share."""
    rng = random.Random(stable_seed(seed, "base"))
    others = [name for name in TOPICS if name != BASE_TOPIC]
    names = [BASE_TOPIC, *others]
    weights = [BASE_TOPIC_SHARE] + [(1 - BASE_TOPIC_SHARE) / len(others)] * len(others)
    return [document(TOPICS[rng.choices(names, weights=weights)[0]], rng) for _ in range(n_docs)]
