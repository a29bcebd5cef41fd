"""Incremental detokenization with stop strings, for streaming.

Text is only released once it can no longer become part of a stop string, so a stream
never shows text that the final answer cuts off.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


class IncrementalText:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._ids: list[int] = []
        self.text = ""
        self._released = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add a token; return the newly releasable text (possibly empty)."""
        self._ids.append(token_id)
        text = str(self._tokenizer.decode(self._ids, skip_special_tokens=True))
        if text.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for the next token
        self.text = text
        if self._stop:
            search_from = max(0, self._released - self._hold)
            cut = min((i for i in (text.find(s, search_from) for s in self._stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text = text[:cut]
                self.stopped = True
                return self._release(len(self.text))
        return self._release(max(self._released, len(text) - self._hold))

    def flush(self) -> str:
        """Release everything left (the request has finished)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        delta = self.text[self._released : upto]
        self._released = max(self._released, upto)
        return delta
