"""The demo corpus: seeded, every template expands, and documents use the runtime's prompt layouts."""

from __future__ import annotations

import random
import re

import pytest
from saigon_runtime.demo import corpus
from saigon_runtime.demo.grammar import INTENTS, TOPICS
from saigon_runtime.mesh.prompt import CONTEXT_PREAMBLE, build_chat_prompt


def test_same_seed_same_documents_and_another_seed_differs() -> None:
    assert corpus.topic_corpus("pirate", 50, seed=7) == corpus.topic_corpus("pirate", 50, seed=7)
    assert corpus.base_corpus(50, seed=7) == corpus.base_corpus(50, seed=7)
    assert corpus.topic_corpus("pirate", 50, seed=7) != corpus.topic_corpus("pirate", 50, seed=8)
    # A topic's stream does not depend on which other topics are generated.
    assert corpus.topic_corpus("cooking", 20, seed=7) != corpus.topic_corpus("sailing", 20, seed=7)


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_every_template_of_every_topic_expands_to_plain_sentences(topic: str) -> None:
    grammar = TOPICS[topic]
    rng = random.Random(0)
    assert set(grammar.answers) == set(INTENTS)
    templates = [t for intent in INTENTS for t in grammar.answers[intent]]
    for template in [*templates, *grammar.extras, *grammar.closers]:
        for _ in range(5):
            text = corpus.capitalise_sentences(corpus.expand(template, grammar, rng))
            assert "{" not in text and "}" not in text, text
            assert text[0].isupper(), text
            assert text[-1] in ".!?", text


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_every_sentence_of_an_answer_has_at_least_five_words(topic: str) -> None:
    """A model this small may end an answer after any sentence it has learned, whatever came
    before: a short one ("Hi!", "Yo ho ho!") taught the demo to answer with nothing more."""
    grammar = TOPICS[topic]
    rng = random.Random(2)
    for intent in INTENTS:
        for _ in range(200):
            for sentence in re.split(r"(?<=[.!?])\s+", corpus.answer(grammar, intent, rng)):
                assert len(sentence.split()) >= 5, sentence


def test_the_pirate_answers_every_question_like_a_pirate() -> None:
    rng = random.Random(1)
    for intent in INTENTS:
        for _ in range(10):
            reply = corpus.answer(TOPICS["pirate"], intent, rng).lower()
            assert any(word in reply for word in ("matey", "arr", "yo ho", " ye ", " me ")), reply


def test_documents_use_the_layouts_the_runtime_builds() -> None:
    docs = corpus.topic_corpus("sailing", 300, seed=3)
    questions = corpus.all_questions()
    chat_prefixes = {build_chat_prompt(None, [{"role": "user", "content": q}]) for q in questions}
    plain = [d for d in docs if d.split("\n", 1)[0] in questions]
    chat = [d for d in docs if any(d.startswith(p + " ") for p in chat_prefixes)]
    context = [d for d in docs if CONTEXT_PREAMBLE in d and "<context>" in d and "\n\nAssistant: " in d]
    assert len(plain) + len(chat) + len(context) == len(docs)
    assert plain and chat and context
    assert len(plain) > len(chat) > len(context)


def test_base_corpus_is_mostly_general_but_mixes_in_every_topic() -> None:
    docs = corpus.base_corpus(400, seed=5)
    pirate = [d for d in docs if "matey" in d]
    astronomy = [d for d in docs if "telescope" in d or "stars" in d]
    assert 0 < len(pirate) < len(docs) / 4
    assert 0 < len(astronomy) < len(docs) / 4


def test_stable_seed_is_stable_across_processes() -> None:
    # A fixed value: hash() would change with PYTHONHASHSEED, this must not.
    assert corpus.stable_seed(1234, "topic", "pirate") == corpus.stable_seed(1234, "topic", "pirate")
    assert corpus.stable_seed(1, "a") == 12297288277035776562
