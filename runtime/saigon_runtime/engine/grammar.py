"""Constrained decoding with llguidance: JSON Schema grammars, one matcher per row.

Each constrained row computes its allowed-token bitmask on the CPU before a step; the sampler
masks only those rows' logits, so rows without a grammar pay nothing. llguidance compiles
lazily and bounds the work of every mask (its parser limits), so a hostile schema costs its
own request an error, never the engine a stall.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import llguidance
import torch
from llguidance.hf import from_tokenizer
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from saigon_runtime.errors import InvalidRequest

# A schema document larger than this is refused before compiling.
MAX_SCHEMA_CHARS = 64_000
# Without `whitespace_flexible` off, a model may pad JSON with whitespace for ever.
_COMPILE_OPTIONS: Any = {"whitespace_flexible": False}
_BITS = torch.tensor([1 << i for i in range(32)], dtype=torch.int64)


@dataclass(frozen=True)
class GrammarSpec:
    """The output must be a JSON value matching `json_schema` (a JSON Schema document, as JSON text)."""

    json_schema: str


def json_object_spec() -> GrammarSpec:
    return GrammarSpec(json.dumps({"type": "object"}))


class GrammarCompiler:
    """Per engine: the tokenizer in llguidance's form (built once, about a second) and matchers."""

    def __init__(self, tokenizer: Any, model_vocab: int, eos_ids: set[int]) -> None:
        self._hf = tokenizer
        self.model_vocab = model_vocab
        self._eos = sorted(eos_ids)
        self._lock = threading.Lock()
        self._tokenizer: llguidance.LLTokenizer | None = None

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                # llguidance needs room for every token the tokenizer knows, even past the model's rows.
                vocab = max(self.model_vocab, len(self._hf))
                eos = self._eos or None
                self._tokenizer = from_tokenizer(self._hf, n_vocab=vocab, eos_token=eos)
            return self._tokenizer

    def grammar(self, spec: GrammarSpec) -> str:
        if len(spec.json_schema) > MAX_SCHEMA_CHARS:
            raise InvalidRequest(f"the JSON schema exceeds {MAX_SCHEMA_CHARS} characters", param="response_format")
        try:
            return str(llguidance.LLMatcher.grammar_from_json_schema(spec.json_schema, overrides=_COMPILE_OPTIONS))
        except Exception as exc:  # whatever the compiler says about untrusted input, it is the request's fault
            raise InvalidRequest(
                f"response_format: invalid JSON schema ({exc})"[:400], param="response_format"
            ) from None

    def validate(self, spec: GrammarSpec) -> None:
        """Raise InvalidRequest naming `response_format` when the schema cannot be compiled."""
        error = llguidance.LLMatcher.validate_grammar(self.grammar(spec), self.tokenizer)
        if error:
            raise InvalidRequest(f"response_format: unsupported JSON schema: {error[:300]}", param="response_format")

    def matcher(self, spec: GrammarSpec) -> RowGrammar:
        try:
            matcher = llguidance.LLMatcher(self.tokenizer, self.grammar(spec))
        except (ValueError, RuntimeError) as exc:
            raise InvalidRequest(f"response_format: {exc}"[:400], param="response_format") from None
        if matcher.is_error():
            raise InvalidRequest(f"response_format: {matcher.get_error()[:300]}", param="response_format")
        return RowGrammar(matcher, self.tokenizer.vocab_size)


class RowGrammar:
    """The grammar state of one row: which tokens may come next, and advancing by one token."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab: int) -> None:
        self._matcher = matcher
        self._bitmask = allocate_token_bitmask(1, vocab)

    def allowed(self, model_vocab: int) -> torch.Tensor:
        """A bool tensor over the model's vocabulary: True where the next token may be."""
        fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        words = torch.from_numpy(self._bitmask[0]).to(torch.int64)
        bits = (words.unsqueeze(-1) & _BITS) != 0
        return bits.flatten()[:model_vocab]

    def advance(self, token_id: int) -> bool:
        """Consume the sampled token; False if the grammar rejects it (the row then stops)."""
        return bool(self._matcher.consume_token(token_id))

    @property
    def finished(self) -> bool:
        """The output is complete: the grammar allows nothing but the end."""
        return bool(self._matcher.is_stopped())

    @property
    def failed(self) -> bool:
        return bool(self._matcher.is_error())


def apply_grammar_masks(logits: torch.Tensor, rows: list[tuple[int, RowGrammar]]) -> None:
    """Set the logits of forbidden tokens to -inf, in place, for the constrained rows only."""
    if not rows:
        return
    vocab = logits.shape[-1]
    allowed = torch.stack([grammar.allowed(vocab) for _, grammar in rows]).to(logits.device)
    index = torch.tensor([row for row, _ in rows], device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
