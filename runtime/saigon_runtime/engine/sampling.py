"""Next-token choice per row: greedy at temperature 0, else temperature + nucleus sampling."""

from __future__ import annotations

import torch

from saigon_runtime.engine.types import SamplingParams


def sample_next(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """`logits` is [rows, vocab]; returns one token id per row."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for row, p in enumerate(params):
        if p.temperature <= 0.0:
            out.append(int(greedy[row]))
            continue
        probs = torch.softmax(logits[row].float() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > p.top_p
            sorted_probs[outside] = 0.0
            choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generators[row])
            out.append(int(order[int(choice)]))
        else:
            out.append(int(torch.multinomial(probs.cpu(), 1, generator=generators[row])))
    return out
