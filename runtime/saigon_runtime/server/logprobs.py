"""Log-probabilities in OpenAI's two shapes: completions (parallel lists) and chat (one entry per token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saigon_runtime.engine.types import TokenLogprob
from saigon_runtime.server.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


class TokenNames:
    """How a token id appears in a response: its text, or `token_id:<id>` when asked (vLLM's extension)."""

    def __init__(self, tokenizer: Any, as_ids: bool) -> None:
        self._tokenizer = tokenizer
        self._as_ids = as_ids
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if self._as_ids:
            return f"token_id:{token_id}"
        name = self._cache.get(token_id)
        if name is None:
            name = self._cache[token_id] = str(self._tokenizer.decode([token_id]))
        return name


def completion_logprobs(
    entries: Sequence[tuple[int, TokenLogprob | None]], names: TokenNames, offset: int = 0
) -> CompletionLogprobs:
    """`entries` are (token id, its log-probability or None for a first prompt token), in order;
    `offset` is where the first token's text starts within the choice's text."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for token_id, lp in entries:
        name = names(token_id)
        out.tokens.append(name)
        out.text_offset.append(offset)
        offset += len(name)
        if lp is None:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(lp.logprob)
        top = {names(i): v for i, v in lp.top}
        top.setdefault(name, lp.logprob)
        out.top_logprobs.append(top)
    return out


def chat_logprobs(entries: Sequence[TokenLogprob], names: TokenNames) -> ChatLogprobs:
    def top(token_id: int, logprob: float) -> TopLogprob:
        name = names(token_id)
        return TopLogprob(token=name, logprob=logprob, bytes=list(name.encode()))

    content = []
    for lp in entries:
        name = names(lp.token_id)
        content.append(
            ChatTokenLogprob(
                token=name,
                logprob=lp.logprob,
                bytes=list(name.encode()),
                top_logprobs=[top(i, v) for i, v in lp.top],
            )
        )
    return ChatLogprobs(content=content)
