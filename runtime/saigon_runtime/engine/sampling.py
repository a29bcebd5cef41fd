"""Next-token choice per row: greedy at temperature 0, else temperature + nucleus sampling."""

from __future__ import annotations

import torch

from saigon_runtime.engine.types import SamplingParams

# Below this a temperature only rescales logits into overflow; it means "greedy" in practice.
MIN_TEMPERATURE = 1e-5


def sample_next(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """`logits` is [rows, vocab]; returns one token id per row."""
    greedy = logits.argmax(dim=-1).tolist()
    return [
        int(greedy[row]) if p.temperature < MIN_TEMPERATURE else _sample(logits[row], p, generators[row], greedy[row])
        for row, p in enumerate(params)
    ]


def _sample(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None, fallback: int) -> int:
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        return int(fallback)  # degenerate logits: the most likely token is the only sensible answer
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > p.top_p] = 0.0
        choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator)
        return int(order[int(choice)])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
