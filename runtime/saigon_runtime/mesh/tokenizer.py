"""What the mesh code needs from a tokenizer, duck-typed so no ML library is imported here.

Accepted: a Hugging Face tokenizer, any object with `encode(text) -> list[int]` or a
callable returning token ids (or a mapping with "input_ids"), or None for a whitespace count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

TokenCounter = Callable[[str], int]


def whitespace_token_count(text: str) -> int:
    return len(text.split())


def make_token_counter(tokenizer: Any | None) -> TokenCounter:
    """A function counting the tokens of a text, without special tokens where the tokenizer allows."""
    if tokenizer is None:
        return whitespace_token_count
    # A Hugging Face fast tokenizer's Rust backend counts the same tokens without the Python
    # wrapper's per-call overhead (most of the cost of a short line).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and callable(getattr(backend, "encode", None)):
        return lambda text: len(backend.encode(text, add_special_tokens=False).ids)
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        return _with_fallback(lambda text, **kw: encode(text, **kw))
    if callable(tokenizer):
        return _with_fallback(lambda text, **kw: tokenizer(text, **kw))
    raise TypeError("tokenizer must have encode(text) or be callable")


def _with_fallback(call: Callable[..., Any]) -> TokenCounter:
    # Hugging Face tokenizers take add_special_tokens; simple ones may not. Learn which once.
    accepts_kwarg = True

    def count(text: str) -> int:
        nonlocal accepts_kwarg
        if accepts_kwarg:
            try:
                return _length(call(text, add_special_tokens=False))
            except TypeError:
                accepts_kwarg = False
        return _length(call(text))

    return count


def _length(result: Any) -> int:
    if isinstance(result, Mapping):
        result = result["input_ids"]
    if isinstance(result, Sequence) or hasattr(result, "__len__"):
        return len(result)
    raise TypeError(f"tokenizer returned {type(result).__name__}, expected a sequence of token ids")


def special_tokens(tokenizer: Any | None) -> tuple[str, ...]:
    """The tokenizer's special-token strings (e.g. "<|im_start|>"), which untrusted text must not carry."""
    if tokenizer is None:
        return ()
    found: set[str] = set()
    for token in getattr(tokenizer, "all_special_tokens", None) or ():
        if isinstance(token, str):
            found.add(token)
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if isinstance(decoder, Mapping):
        for added in decoder.values():
            content = getattr(added, "content", None)
            if getattr(added, "special", False) and isinstance(content, str):
                found.add(content)
    return tuple(sorted((t for t in found if t), key=len, reverse=True))


def has_chat_template(tokenizer: Any | None) -> bool:
    if tokenizer is None or not callable(getattr(tokenizer, "apply_chat_template", None)):
        return False
    # Hugging Face tokenizers always have the method; the template itself may be absent.
    return bool(getattr(tokenizer, "chat_template", True))
