"""Seeded, template-based English documents for the demo model and its adapters.

A document is a question followed by a topic's answer, in one of the three layouts the runtime
can hand the model: the bare input (`Question\\nAnswer`), the plain chat layout
(`User: ...\\n\\nAssistant: ...`) and that layout with a mesh context block. The chat layouts
come from `saigon_runtime.mesh.prompt`, so the model is trained on exactly what it will see.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping

from saigon_runtime.demo.grammar import INTENTS, QUESTIONS, SHARED_SLOTS, TOPICS, Topic
from saigon_runtime.mesh.prompt import build_chat_prompt, build_prompt

# Bump when the grammar, the layouts or the training recipe change: it keys the demo cache.
GENERATOR_VERSION = "1"

BASE_TOPIC = "general"
# General answers are the base model's majority voice, but it also learns every topic's
# phrasing, so an adapter only has to shift which topic answers (measured: far more fluent
# adapters for the same training cost than with a 0.75 general share).
BASE_TOPIC_SHARE = 0.5

LAYOUT_WEIGHTS: Mapping[str, float] = {"plain": 0.6, "chat": 0.3, "context": 0.1}

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
_CONTEXT_RELATIONS = ("knows", "works with", "lives near")


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


def capitalise_sentences(text: str) -> str:
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def answer(topic: Topic, intent: str, rng: random.Random) -> str:
    sentences = [rng.choice(topic.answers[intent])]
    sentences += rng.sample(list(topic.extras), k=rng.choice((0, 1, 1, 2)))
    if rng.random() < 0.4:
        sentences.append(rng.choice(topic.closers))
    return capitalise_sentences(" ".join(expand(s, topic, rng) for s in sentences))


def mesh_context(rng: random.Random) -> str:
    """A context block body shaped like the runtime's rendering of a user's mesh."""
    names = rng.sample(_CONTEXT_NAMES, k=rng.choice((1, 2, 3)))
    lines = [f"- {name}: {rng.choice(_CONTEXT_FACTS)}" for name in names]
    if len(names) > 1:
        lines += ["Relations:", f"- {names[0]} {rng.choice(_CONTEXT_RELATIONS)} {names[1]}"]
    return "\n".join(lines)


def document(topic: Topic, rng: random.Random) -> str:
    intent = rng.choice(INTENTS)
    question = rng.choice(QUESTIONS[intent])
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
