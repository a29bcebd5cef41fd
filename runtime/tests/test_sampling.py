"""The batched sampler on hand-made logits: each row's penalties, bias, grammar and log-probabilities
apply to that row only, with vLLM's definitions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from saigon_runtime.engine.grammar import GrammarCompiler, GrammarSpec
from saigon_runtime.engine.sampling import RowSampling, sample_next, seeded_generator
from saigon_runtime.engine.types import SamplingParams
from saigon_runtime.errors import InvalidRequest
from transformers import AutoTokenizer

GREEDY = SamplingParams(temperature=0.0)


def row(params: SamplingParams = GREEDY, prompt: list[int] | None = None, generated: list[int] | None = None,
        grammar=None) -> RowSampling:  # type: ignore[no-untyped-def]  # fmt: skip
    return RowSampling(params, None, prompt or [], generated or [], grammar)


def test_penalties_follow_vllms_definitions_per_row() -> None:
    logits = torch.tensor([[2.0, 1.9, -1.0, 0.5]] * 3)
    rep = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    freq = SamplingParams(temperature=0.0, frequency_penalty=0.1)
    pres = SamplingParams(temperature=0.0, presence_penalty=0.5)
    picks = sample_next(logits, [row(rep, prompt=[0]), row(freq, generated=[0, 0]), row(pres, generated=[0])])
    # 2.0/2 = 1.0 < 1.9; 2.0 - 0.2 = 1.8 < 1.9; 2.0 - 0.5 = 1.5 < 1.9
    assert [p.token_id for p in picks] == [1, 1, 1]
    untouched = sample_next(logits, [row(prompt=[0], generated=[0, 0])])
    assert untouched[0].token_id == 0  # no penalty asked: the same history changes nothing
    negative = torch.tensor([[-1.0, -1.5, -3.0]])
    # A repeated negative logit is multiplied: -1 * 2 = -2 < -1.5.
    assert sample_next(negative, [row(rep, prompt=[0])])[0].token_id == 1


def test_logit_bias_and_logprobs_of_the_models_own_distribution() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0, 1.0], [3.0, 0.0, 0.0, 1.0]])
    biased = SamplingParams(temperature=0.0, logit_bias=((2, 10.0),), logprobs=2)
    picks = sample_next(logits, [row(biased), row(SamplingParams(temperature=0.0, logprobs=0))])
    assert [p.token_id for p in picks] == [2, 0]
    expected = torch.log_softmax(logits[0], -1)
    first = picks[0].logprob
    assert first is not None and first.logprob == pytest.approx(float(expected[2]))
    assert [t for t, _ in first.top] == [0, 3]
    assert picks[1].logprob is not None and picks[1].logprob.top == ()


def test_seeds_use_all_64_bits() -> None:
    def draw(seed: int) -> float:
        return float(torch.rand(1, generator=seeded_generator(seed)))

    assert draw(-1) == draw(2**64 - 1)  # the same 64-bit pattern
    assert len({draw(s) for s in (0, 1, 2**32, 2**63, 2**63 - 1, -1, -2)}) == 7


def test_range_checks_name_the_field() -> None:
    for params, field in (
        (SamplingParams(presence_penalty=2.5), "presence_penalty"),
        (SamplingParams(frequency_penalty=-2.5), "frequency_penalty"),
        (SamplingParams(repetition_penalty=0.0), "repetition_penalty"),
        (SamplingParams(logprobs=21), "logprobs"),
        (SamplingParams(logit_bias=((1, 101.0),)), "logit_bias"),
        (SamplingParams(seed=2**64), "seed"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            params.validate()
        assert caught.value.param == field


def test_a_grammar_masks_its_own_row_only(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    compiler = GrammarCompiler(tokenizer, 256, {0})
    grammar = compiler.matcher(GrammarSpec('{"enum": ["yes"]}'))
    logits = torch.zeros((2, 256))
    logits[:, 5] = 50.0  # a token the grammar does not allow first
    picks = sample_next(logits, [row(grammar=grammar), row()])
    assert picks[1].token_id == 5
    text = tokenizer.decode([picks[0].token_id])
    assert '"yes"'.startswith(text) and text
    assert grammar.advance(picks[0].token_id)
    assert not math.isinf(float(logits[0, 5]))  # the caller's logits are not modified
    with pytest.raises(InvalidRequest):
        compiler.validate(GrammarSpec('{"type": "no-such-type"}'))
