"""Incremental detokenization with stop strings, for streaming.

Each token costs O(1): a fast tokenizer's `DecodeStream` decodes only a short window of
recent ids, and text is kept as released pieces plus a short unreleased tail. The output
is the same as decoding every prefix in full: a token that ends inside a multi-byte
character releases nothing until the character is complete.

Text is only released once it can no longer become part of a stop string, so a stream
never shows text that the final answer cuts off.
"""

from __future__ import annotations

from typing import Protocol

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"


class _Stream(Protocol):
    def step(self, token_id: int) -> str | None: ...


class _FastStream:
    def __init__(self, backend: Tokenizer) -> None:
        self._backend = backend
        self._stream = DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str | None:
        return self._stream.step(self._backend, token_id)


class _PrefixStream:
    """For tokenizers without an incremental decoder (slow ones, or ones that clean up spaces
    over the whole text): decode the full prefix each time, as the exact reference."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._text = ""

    def step(self, token_id: int) -> str | None:
        self._ids.append(token_id)
        text = str(self._tokenizer.decode(self._ids, skip_special_tokens=True))
        if text.endswith(_INCOMPLETE) or not text.startswith(self._text):
            return None
        delta, self._text = text[len(self._text) :], text
        return delta


def token_stream(tokenizer: PreTrainedTokenizerBase) -> _Stream:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer) and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return _FastStream(backend)
    return _PrefixStream(tokenizer)


class IncrementalText:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...] = ()) -> None:
        self._stream = token_stream(tokenizer)
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._released: list[str] = []
        self._tail = ""  # decoded but not yet released: at most the stop-string hold plus one chunk
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything decoded so far (cut before a stop string once one is found)."""
        return "".join(self._released) + self._tail

    def push(self, token_id: int, match_stop: bool = True) -> str:
        """Add a token; return the newly releasable text (possibly empty). With `match_stop` False
        (min_tokens not reached yet) its text is released unsearched: stop strings match only in
        text that comes later."""
        chunk = self._stream.step(token_id)
        if not chunk or self.stopped:
            return ""
        self._tail += chunk
        if not match_stop:
            return self.flush()
        if self._stop:
            # Released text can never hold the start of a stop string, so only the tail is searched.
            cut = min((i for i in (self._tail.find(s) for s in self._stop) if i >= 0), default=-1)
            if cut >= 0:
                self._tail = self._tail[:cut]
                self.stopped = True
                return self.flush()
        return self._release(len(self._tail) - self._hold)

    def flush(self) -> str:
        """Release everything left (the request has finished)."""
        return self._release(len(self._tail))

    def _release(self, upto: int) -> str:
        if upto <= 0:
            return ""
        delta, self._tail = self._tail[:upto], self._tail[upto:]
        self._released.append(delta)
        return delta
