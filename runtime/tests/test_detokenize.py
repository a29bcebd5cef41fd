"""Streaming detokenization: O(1) per token and the same bytes as decoding every prefix in full."""

from __future__ import annotations

import random

import pytest
from saigon_runtime.engine.detokenize import IncrementalText, _FastStream, _PrefixStream, token_stream
from saigon_runtime.testing.tiny import make_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

MULTI_BYTE = "the cat é ü 你好 ship 🚀🐱 sun ñ \U0001d518 moon"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return make_tokenizer(tmp_path_factory.mktemp("tok"), 256)


def _reference_deltas(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """The previous algorithm: decode the whole prefix; hold back while it ends inside a character."""
    deltas, shown = [], ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        if text.endswith("\ufffd"):
            deltas.append("")
            continue
        deltas.append(text[len(shown) :])
        shown = text
    return deltas


def _deltas(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop: tuple[str, ...] = ()) -> list[str]:
    inc = IncrementalText(tokenizer, stop)
    return [inc.push(t) for t in ids]


def test_byte_level_bpe_splits_multi_byte_characters_across_tokens(tokenizer):
    ids = tokenizer(MULTI_BYTE)["input_ids"]
    pieces = [tokenizer.decode([t]) for t in ids]
    assert any("\ufffd" in p for p in pieces)  # the test really covers split UTF-8 bytes
    assert isinstance(token_stream(tokenizer), _FastStream)


def test_stream_equals_decoding_every_prefix_with_multi_byte_characters(tokenizer):
    ids = tokenizer(MULTI_BYTE)["input_ids"]
    deltas = _deltas(tokenizer, ids)
    assert deltas == _reference_deltas(tokenizer, ids)
    assert "".join(deltas) == MULTI_BYTE


def test_random_token_sequences_with_special_and_invalid_bytes_match_the_reference(tokenizer):
    rng = random.Random(7)
    vocab = len(tokenizer)
    for _ in range(200):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        inc = IncrementalText(tokenizer)
        deltas = [inc.push(t) for t in ids]
        assert deltas == _reference_deltas(tokenizer, ids), ids
        expected = tokenizer.decode(ids, skip_special_tokens=True)
        assert inc.text + inc.flush() == expected or expected.endswith("\ufffd")


def test_stop_strings_cut_the_text_and_never_stream_past_it(tokenizer):
    ids = tokenizer("the cat 你好 ship and the dog")["input_ids"]
    inc = IncrementalText(tokenizer, ("好 sh", "dog"))
    streamed = ""
    for t in ids:
        streamed += inc.push(t)
        if inc.stopped:
            break
    streamed += inc.flush()
    assert inc.stopped and streamed == inc.text == "the cat 你"


def test_the_prefix_stream_fallback_gives_the_same_deltas(tokenizer):
    ids = tokenizer(MULTI_BYTE)["input_ids"]
    fast, slow = _FastStream(tokenizer.backend_tokenizer), _PrefixStream(tokenizer)
    assert [fast.step(t) or "" for t in ids] == [slow.step(t) or "" for t in ids]


def test_a_long_stream_does_not_re_decode_the_whole_text(tokenizer, monkeypatch):
    calls: list[int] = []
    original = tokenizer.decode

    def counting(ids, *args, **kwargs):
        calls.append(len(ids))
        return original(ids, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "decode", counting)
    ids = tokenizer(MULTI_BYTE * 20)["input_ids"]
    text = "".join(_deltas(tokenizer, ids))
    assert text == MULTI_BYTE * 20
    assert calls == []  # the fast path never calls the full decode


def _metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style: "▁" marks spaces and the decoder strips the leading one."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<eos>"], show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat", "hello world, the ship sails"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def test_a_metaspace_tokenizer_streams_leading_spaces_as_the_full_decode_does():
    tok = _metaspace_tokenizer()
    ids = tok("the cat sat on the mat hello world")["input_ids"]
    eos = tok.convert_tokens_to_ids("<eos>")
    ids = [ids[0], eos, *ids[1:]]  # a special token in the middle is skipped, as in the full decode
    assert _deltas(tok, ids) == _reference_deltas(tok, ids)
    assert "".join(_deltas(tok, ids)) == tok.decode(ids, skip_special_tokens=True)


def test_a_tokenizer_that_cleans_up_spaces_takes_the_exact_prefix_path(tokenizer):
    tok = _metaspace_tokenizer()
    tok.clean_up_tokenization_spaces = True
    assert isinstance(token_stream(tok), _PrefixStream)
    ids = tok("hello world , the cat")["input_ids"]
    assert _deltas(tok, ids) == _reference_deltas(tok, ids)
