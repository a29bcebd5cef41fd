"""Next-token choice for a batch of rows, each with its own settings.

One pass over the batch's logits: log-probabilities (of the model's own distribution) for the
rows that asked, then, only for the rows that need them, repetition/presence/frequency
penalties, logit bias, grammar masks and banned tokens, then greedy or temperature + nucleus sampling with
each row's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saigon_runtime.engine.grammar import RowGrammar, apply_grammar_masks
from saigon_runtime.engine.types import SamplingParams, TokenLogprob

# Below this a temperature only rescales logits into overflow; it means "greedy" in practice.
MIN_TEMPERATURE = 1e-5
_U64 = (1 << 64) - 1


@dataclass
class RowSampling:
    """What the sampler needs to know about one row."""

    params: SamplingParams
    generator: torch.Generator | None
    prompt_ids: list[int]
    generated: list[int]
    grammar: RowGrammar | None = None
    banned: tuple[int, ...] = ()  # tokens the row may not pick now (end-of-sequence before min_tokens)


@dataclass(frozen=True)
class Pick:
    token_id: int
    logprob: TokenLogprob | None


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for any signed or unsigned 64-bit seed.

    torch's CPU generator keeps only the low 32 bits of a seed; mixing all 64 bits first (the
    splitmix64 finalizer) keeps seeds that differ only in their high bits (negative ones
    included) apart."""
    z = (seed & _U64) + 0x9E3779B97F4A7C15 & _U64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _U64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _U64
    return torch.Generator().manual_seed((z ^ (z >> 31)) & 0xFFFFFFFF)


def sample_next(logits: torch.Tensor, rows: list[RowSampling]) -> list[Pick]:
    """`logits` is [rows, vocab]; returns one pick per row."""
    raw = logits.float()
    wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    logprobs = torch.log_softmax(raw[wanted], dim=-1) if wanted else None
    processed = _processed(raw, rows)
    greedy = processed.argmax(dim=-1).tolist()
    tokens = [
        int(greedy[i]) if r.params.temperature < MIN_TEMPERATURE else _sample(processed[i], r, greedy[i])
        for i, r in enumerate(rows)
    ]
    picks: list[TokenLogprob | None] = [None] * len(rows)
    if logprobs is not None:
        for j, i in enumerate(wanted):
            picks[i] = token_logprob(logprobs[j], tokens[i], rows[i].params.logprobs or 0)
    return [Pick(tok, lp) for tok, lp in zip(tokens, picks, strict=True)]


def _processed(raw: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    penalized = [i for i, r in enumerate(rows) if r.params.penalized]
    biased = [i for i, r in enumerate(rows) if r.params.logit_bias]
    constrained = [(i, r.grammar) for i, r in enumerate(rows) if r.grammar is not None]
    banning = [i for i, r in enumerate(rows) if r.banned]
    if not (penalized or biased or constrained or banning):
        return raw
    out = raw.clone()
    if penalized:
        _apply_penalties(out, [(i, rows[i]) for i in penalized])
    for i in biased:
        ids, values = zip(*rows[i].params.logit_bias, strict=True)
        out[i, torch.tensor(ids, device=out.device)] += torch.tensor(values, device=out.device)
    apply_grammar_masks(out, constrained)
    for i in banning:
        out[i, torch.tensor(rows[i].banned, device=out.device)] = float("-inf")
    return out


def _counts(token_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[rows, vocab] occurrence counts of each row's tokens."""
    width = max((len(t) for t in token_lists), default=0)
    padded = torch.full((len(token_lists), max(width, 1)), vocab, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        if tokens:
            padded[row, : len(tokens)] = torch.tensor(tokens)
    counts = torch.zeros((len(token_lists), vocab + 1), device=device)
    counts.scatter_add_(1, padded.to(device), torch.ones(padded.shape, device=device))
    return counts[:, :vocab]


def _apply_penalties(logits: torch.Tensor, rows: list[tuple[int, RowSampling]]) -> None:
    """vLLM's definitions: repetition over prompt and output, presence and frequency over output."""
    index = torch.tensor([i for i, _ in rows], device=logits.device)
    sub = logits[index]
    vocab = sub.shape[-1]

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, device=sub.device).unsqueeze(-1)

    output = _counts([r.generated for _, r in rows], vocab, sub.device)
    repetition = column([r.params.repetition_penalty for _, r in rows])
    if any(r.params.repetition_penalty != 1.0 for _, r in rows):
        seen = (_counts([r.prompt_ids for _, r in rows], vocab, sub.device) + output) > 0
        sub = torch.where(seen, torch.where(sub > 0, sub / repetition, sub * repetition), sub)
    sub = sub - column([r.params.frequency_penalty for _, r in rows]) * output
    sub = sub - column([r.params.presence_penalty for _, r in rows]) * (output > 0)
    logits[index] = sub


def token_logprob(row: torch.Tensor, token: int, top: int) -> TokenLogprob:
    chosen = float(row[token])
    if top <= 0:
        return TokenLogprob(token, chosen)
    values, ids = row.topk(min(top, row.shape[-1]))
    return TokenLogprob(token, chosen, tuple(zip(ids.tolist(), values.tolist(), strict=True)))


def _sample(logits: torch.Tensor, row: RowSampling, fallback: int) -> int:
    p = row.params
    probs = torch.softmax(logits / p.temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        return int(fallback)  # degenerate logits: the most likely token is the only sensible answer
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > p.top_p] = 0.0
        choice = torch.multinomial(sorted_probs.cpu(), 1, generator=row.generator)
        return int(order[int(choice)])
    return int(torch.multinomial(probs.cpu(), 1, generator=row.generator))
