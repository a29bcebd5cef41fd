"""The request patterns of vLLM's OpenAI-server test suite (tests/entrypoints/openai/: completion,
chat, basic, models, LoRA adapters, tokens as ids), written anew for Saigon and run by the official
`openai` client against a real server with a tiny real model and PEFT adapters.

The tiny model is random, so the tests assert structure, agreement between paths (streamed vs not,
token ids vs text, seeds) and the effect of each parameter, never particular words."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import requests
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

PROMPT = "the cat and the dog"
ADAPTER = "user_alice"
ANY = {"ignore_eos": True}  # vLLM's extension: full-length answers from a model that may end early


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    adapters = tmp_path_factory.mktemp("parity") / "adapters"
    install_adapter(adapters, ADAPTER, "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(adapters, "domain_cooking", "v1", adapter_factory(tiny_llama_dir, seed=2))
    broken = install_adapter(adapters, "user_broken", "v1", adapter_factory(tiny_llama_dir, seed=3))
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    config = make_config(tiny_llama_dir, adapters_dir=adapters, max_batch_size=16, max_queue=64,
                         staging_dir=adapters.parent / "staging")  # fmt: skip
    with live_server(config) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def bad_request(call: Any, param: str) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict), body
    assert body["param"] == param, body
    assert body["type"] == "invalid_request_error" and body["message"]
    return body


def ids_of(server: LiveServer, text: str) -> list[int]:
    return list(server.engine.tokenizer.encode(text))


def decoded(server: LiveServer, names: list[str]) -> str:
    """The text of tokens named `token_id:<id>`; the answer's text never ends in half a character."""
    ids = [int(name.removeprefix("token_id:")) for name in names]
    return str(server.engine.tokenizer.decode(ids)).rstrip("\ufffd")


# ---------------------------------------------------------------- completions (test_completion.py)


def test_single_completion_has_text_usage_and_finish_reason(client: openai.OpenAI, server: LiveServer) -> None:
    out = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=5, temperature=0, extra_body=ANY)
    assert out.id and out.object == "text_completion" and out.model == ADAPTER
    assert len(out.choices) == 1 and out.choices[0].index == 0
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids_of(server, PROMPT)), 5)
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_logprobs_none_zero_and_some(client: openai.OpenAI, server: LiveServer) -> None:
    plain = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=5, temperature=0, extra_body=ANY)
    assert plain.choices[0].logprobs is None
    zero = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=0,
        extra_body={**ANY, "return_tokens_as_token_ids": True},
    )  # fmt: skip
    lp = zero.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert all(isinstance(v, float) and v <= 0.0 for v in lp.token_logprobs)
    assert all(len(top) == 1 for top in lp.top_logprobs if top is not None)  # only the chosen token
    assert decoded(server, lp.tokens) == zero.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    some = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3,
        extra_body={**ANY, "return_tokens_as_token_ids": True},  # distinct names: byte tokens can share one text
    )  # fmt: skip
    lp3 = some.choices[0].logprobs
    assert lp3 is not None and lp3.top_logprobs is not None and lp3.token_logprobs is not None
    for chosen, top in zip(lp3.token_logprobs, lp3.top_logprobs, strict=True):
        assert top is not None and 3 <= len(top) <= 4
        # Greedy: the chosen token is the most likely one.
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)
    assert lp3.token_logprobs == pytest.approx(lp.token_logprobs, abs=1e-5)


def test_too_many_logprobs_is_a_400(client: openai.OpenAI) -> None:
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=2, logprobs=21), "logprobs")


def test_echo_prepends_the_prompt_and_scores_its_tokens(client: openai.OpenAI, server: LiveServer) -> None:
    out = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2,
        extra_body={**ANY, "return_tokens_as_token_ids": True},
    )  # fmt: skip
    plain = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=4, temperature=0, extra_body=ANY)
    choice = out.choices[0]
    assert choice.text == PROMPT + plain.choices[0].text
    lp = choice.logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.tokens is not None and lp.top_logprobs is not None
    n_prompt = len(ids_of(server, PROMPT))
    assert len(lp.tokens) == n_prompt + 4
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    assert all(isinstance(v, float) and v <= 0.0 for v in lp.token_logprobs[1:])
    assert decoded(server, lp.tokens) == choice.text
    # The prompt's scores equal the engine's own scoring of those tokens.
    ids = ids_of(server, PROMPT)
    nll = -sum(v for v in lp.token_logprobs[1:n_prompt] if v is not None) / (n_prompt - 1)
    from saigon_runtime.adapters.types import AdapterRef

    assert nll == pytest.approx(server.engine.score(ids[:1], ids[1:], AdapterRef(ADAPTER, "v1")), abs=1e-4)


def test_prompt_as_token_ids_equals_the_text_prompt(client: openai.OpenAI, server: LiveServer) -> None:
    text = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=6, temperature=0)
    ids = client.completions.create(model=ADAPTER, prompt=ids_of(server, PROMPT), max_tokens=6, temperature=0)
    assert ids.choices[0].text == text.choices[0].text
    assert ids.usage is not None and text.usage is not None and ids.usage.prompt_tokens == text.usage.prompt_tokens
    vocab = server.engine.vocab_size
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=[1, vocab]), "prompt")
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=[[1], [10**12]]), "prompt")


def test_batch_prompts_answer_in_order_with_their_indexes(client: openai.OpenAI, server: LiveServer) -> None:
    prompts = [PROMPT, "hello world", "the sun and the moon"]
    singles = [
        client.completions.create(model=ADAPTER, prompt=p, max_tokens=5, temperature=0).choices[0].text for p in prompts
    ]
    batch = client.completions.create(model=ADAPTER, prompt=prompts, max_tokens=5, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1, 2]
    assert [c.text for c in batch.choices] == singles
    as_ids = client.completions.create(
        model=ADAPTER, prompt=[ids_of(server, p) for p in prompts], max_tokens=5, temperature=0
    )
    assert [c.text for c in as_ids.choices] == singles
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(len(ids_of(server, p)) for p in prompts)


def test_streamed_batch_with_n_matches_the_whole_answer(client: openai.OpenAI) -> None:
    prompts = [PROMPT, "hello world"]
    kwargs: dict[str, Any] = {"model": ADAPTER, "prompt": prompts, "max_tokens": 6, "n": 2, "seed": 11}
    whole = client.completions.create(**kwargs, extra_body=ANY)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    stream = client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}, extra_body=ANY)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason is not None:
                finishes[c.index] = c.finish_reason
    assert texts == {c.index: c.text for c in whole.choices}
    assert finishes == {i: "length" for i in range(4)}
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 24


def test_n_choices_share_the_prompt_and_differ(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=12, n=3, temperature=1.0, seed=5, extra_body=ANY
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len({c.text for c in out.choices}) > 1, "sampled choices must not all be copies"
    again = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=12, n=3, temperature=1.0, seed=5, extra_body=ANY
    )
    assert [c.text for c in again.choices] == [c.text for c in out.choices]


def test_seed_reproduces_over_the_whole_int64_range(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        out = client.completions.create(
            model=ADAPTER, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=seed, extra_body=ANY
        )
        return out.choices[0].text

    for seed in (-(2**63), -1, 0, 2**63 - 1):
        assert sample(seed) == sample(seed)
    assert len({sample(s) for s in (-(2**63), -1, 0, 1, 2**40, 2**63 - 1)}) >= 4
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, seed=2**63), "seed")


def test_user_is_any_string(client: openai.OpenAI) -> None:
    out = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=2, user="Jane Doe <jane@example.com>")
    assert out.choices


def test_logit_bias_takes_effect_and_is_validated(client: openai.OpenAI, server: LiveServer) -> None:
    forced = ids_of(server, " sea")[0]
    out = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=6, temperature=1.0, seed=3, logit_bias={str(forced): 100},
        extra_body={**ANY, "return_tokens_as_token_ids": True}, logprobs=0,
    )  # fmt: skip
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens == [f"token_id:{forced}"] * 6
    banned = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=0, extra_body=ANY
    ).choices[0]
    assert banned.logprobs is not None and banned.logprobs.tokens
    first = ids_of(server, banned.logprobs.tokens[0])[0]
    out = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=6, temperature=0, logit_bias={str(first): -100},
        logprobs=0, extra_body={**ANY, "return_tokens_as_token_ids": True},
    )  # fmt: skip
    assert out.choices[0].logprobs is not None and f"token_id:{first}" not in (out.choices[0].logprobs.tokens or [])
    vocab = server.engine.vocab_size
    bad_request(
        lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, logit_bias={str(vocab): 1}), "logit_bias"
    )
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, logit_bias={"x": 1}), "logit_bias")
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, logit_bias={"5": 101}), "logit_bias.5")


def test_penalties_change_a_looping_answer_and_are_range_checked(client: openai.OpenAI) -> None:
    def greedy(**extra: Any) -> str:
        extra.setdefault("extra_body", ANY)
        out = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=40, temperature=0, **extra)
        return out.choices[0].text

    plain = greedy()
    assert greedy(frequency_penalty=2.0) != plain
    assert greedy(presence_penalty=2.0) != plain
    assert greedy(extra_body={**ANY, "repetition_penalty": 5.0}) != plain
    assert greedy(presence_penalty=0.0, frequency_penalty=0.0) == plain
    for field, value in (("presence_penalty", 2.5), ("frequency_penalty", -3)):
        bad_request(lambda f=field, v=value: client.completions.create(model=ADAPTER, prompt=PROMPT, **{f: v}), field)
    bad_request(
        lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, extra_body={"repetition_penalty": 0}),
        "repetition_penalty",
    )


def test_stream_options_only_with_stream(client: openai.OpenAI) -> None:
    bad_request(
        lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, stream_options={"include_usage": True}),
        "stream_options",
    )


def test_known_but_unsupported_parameters_are_refused_by_name(client: openai.OpenAI) -> None:
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, suffix="!"), "suffix")
    bad_request(lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, n=2, best_of=3), "best_of")


# ---------------------------------------------------------------- nothing accepted and ignored

CHAT = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    "extra",
    [{"top_k": 5}, {"min_p": 0.1}, {"frobnicate": True}, {"tools": [{"type": "function", "function": {"name": "f"}}]}],
    ids=["top_k", "min_p", "frobnicate", "tools"],
)
def test_unknown_fields_are_refused_by_name_on_both_routes(client: openai.OpenAI, extra: dict[str, Any]) -> None:
    (param,) = extra
    completion = bad_request(
        lambda: client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=2, extra_body=extra), param
    )
    chat = bad_request(
        lambda: client.chat.completions.create(model=ADAPTER, messages=CHAT, max_tokens=2, extra_body=extra),  # type: ignore[arg-type]
        param,
    )
    for body in (completion, chat):
        assert body["code"] == "unsupported_parameter" and param in body["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "hi", "cache": True}], "messages.0.cache"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}]}],
         "messages.0.content.0.cache_control"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "",
          "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
         "messages.1.tool_calls"),
    ],
    ids=["field", "content-part-field", "tool_calls"],
)  # fmt: skip
def test_unknown_fields_inside_messages_are_refused_by_name(
    client: openai.OpenAI, messages: list[dict[str, Any]], param: str
) -> None:
    bad_request(lambda: client.chat.completions.create(model=ADAPTER, messages=messages, max_tokens=2), param)  # type: ignore[arg-type]


def test_unknown_fields_inside_nested_options_are_refused_by_name(client: openai.OpenAI) -> None:
    bad_request(
        lambda: client.completions.create(
            model=ADAPTER, prompt=PROMPT, max_tokens=2, stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
        ),
        "stream_options.continuous_usage_stats",
    )  # fmt: skip
    bad_request(
        lambda: client.completions.create(
            model=ADAPTER, prompt=PROMPT, max_tokens=2, extra_body={"response_format": {"type": "json_object", "x": 1}}
        ),
        "response_format.x",
    )


def test_what_openai_clients_send_is_accepted(client: openai.OpenAI) -> None:
    """A message's `name`, OpenAI fields this server does not implement sent as null (clients that
    echo an assistant message back write them), and the extras Saigon implements."""
    messages = [
        {"role": "system", "content": "be brief", "name": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}], "name": "ann"},
        {"role": "assistant", "content": "hi", "tool_calls": None, "function_call": None, "refusal": None},
        {"role": "user", "content": "again"},
    ]
    out = client.chat.completions.create(
        model=ADAPTER, messages=messages, max_tokens=3, temperature=0, user="ann@example.com",  # type: ignore[arg-type]
        extra_body={"tools": None, "mesh_context": False, "repetition_penalty": 1.1, "ignore_eos": True,
                    "return_tokens_as_token_ids": False},
    )  # fmt: skip
    assert out.usage is not None and out.usage.completion_tokens == 3


def test_the_original_api_refuses_unknown_fields_by_name(server: LiveServer) -> None:
    """/api/saigon/infer and its batch route, by aiohttp as a Python service would call them."""

    async def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.post(f"{server.url}{path}", json=body) as response:
            return response.status, await response.json()

    async def main() -> None:
        good = {"user_id": "alice", "input_text": "the cat", "max_length": 2, "temperature": 0}
        status, answer = await post("/api/saigon/infer", good)
        assert status == 200 and answer["completion_tokens"] == 2
        for path, body, param in (
            ("/api/saigon/infer", {**good, "max_tokens": 5}, "max_tokens"),  # OpenAI's name for max_length
            ("/api/saigon/infer", {**good, "top_k": 5}, "top_k"),
            ("/api/saigon/infer/batch", {"requests": [good, {**good, "stream": True}]}, "requests.1.stream"),
        ):
            status, answer = await post(path, body)
            assert status == 400, answer
            assert answer["error"]["param"] == param and answer["error"]["code"] == "unsupported_parameter"

    asyncio.run(main())


def test_min_tokens_holds_off_the_end_of_sequence(client: openai.OpenAI, server: LiveServer) -> None:
    eos = server.engine.tokenizer.eos_token_id
    ending = {"model": ADAPTER, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logit_bias": {str(eos): 100}}
    at_once = client.completions.create(**ending)
    assert at_once.choices[0].text == "" and at_once.choices[0].finish_reason == "stop"
    assert at_once.usage is not None
    at_once_tokens = at_once.usage.completion_tokens  # the end-of-sequence, if usage counts it
    held = client.completions.create(**ending, extra_body={"min_tokens": 5})
    chat = client.chat.completions.create(
        model=ADAPTER, messages=CHAT, max_tokens=12, temperature=0, logit_bias={str(eos): 100},  # type: ignore[arg-type]
        extra_body={"min_tokens": 5},
    )  # fmt: skip
    # five tokens, then the end-of-sequence the bias makes certain
    for usage, reason in ((held.usage, held.choices[0].finish_reason), (chat.usage, chat.choices[0].finish_reason)):
        assert usage is not None and usage.completion_tokens == at_once_tokens + 5 and reason == "stop"
    bad_request(lambda: client.completions.create(**ending, extra_body={"min_tokens": 13}), "min_tokens")
    bad_request(
        lambda: client.completions.create(
            **ending, extra_body={"min_tokens": 2, "response_format": {"type": "json_object"}}
        ),
        "min_tokens",
    )


def test_a_models_min_new_tokens_is_the_default_min_tokens(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Hugging Face's min_new_tokens in generation_config.json holds off the end of sequence for
    requests that do not set min_tokens; a request's own min_tokens (0 included) wins, a short
    max_tokens caps it, and a JSON response_format turns it off."""
    base = Path(shutil.copytree(tiny_llama_dir, tmp_path / "base"))
    config_file = base / "generation_config.json"
    declared = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**declared, "min_new_tokens": 4}))
    with live_server(make_config(base)) as live:
        assert live.engine.sampling_defaults.min_new_tokens == 4
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        eos = live.engine.tokenizer.eos_token_id
        ending: dict[str, Any] = {
            "model": live.engine.model_id, "prompt": PROMPT, "max_tokens": 12, "temperature": 0,
            "logit_bias": {str(eos): 100},
        }  # fmt: skip

        def tokens(**extra: Any) -> tuple[int, str]:
            out = client.completions.create(**{**ending, **extra})
            assert out.usage is not None
            return out.usage.completion_tokens, out.choices[0].finish_reason

        at_once, _ = tokens(extra_body={"min_tokens": 0})
        assert tokens() == (at_once + 4, "stop")
        assert tokens(extra_body={"min_tokens": 6}) == (at_once + 6, "stop")
        assert tokens(max_tokens=2) == (2, "length")
        as_json = client.completions.create(**ending, extra_body={"response_format": {"type": "json_object"}})
        assert as_json.choices[0].finish_reason in {"stop", "length"}  # not a 400: the default stands aside


def test_min_tokens_holds_off_stop_strings(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": ADAPTER, "prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    whole = client.completions.create(**kwargs, extra_body=ANY).choices[0].text
    stop = whole[:3]
    assert stop and whole.find(stop, 1) == -1, whole  # the stop string occurs only at the start
    assert client.completions.create(**kwargs, stop=[stop], extra_body=ANY).choices[0].text == ""
    held = client.completions.create(**kwargs, stop=[stop], extra_body={**ANY, "min_tokens": 8})
    assert held.choices[0].text == whole


# ---------------------------------------------------------------- chat (test_chat.py)

MESSAGES: list[dict[str, str]] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def test_chat_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=ADAPTER, messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True, top_logprobs=4,  # type: ignore[arg-type]
        extra_body=ANY,
    )  # fmt: skip
    content = out.choices[0].logprobs.content if out.choices[0].logprobs else None
    assert content is not None and len(content) == 5
    for entry in content:
        assert entry.logprob <= 0.0 and len(entry.top_logprobs) == 4
        assert entry.bytes == list(entry.token.encode())
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-5)
    assert all(entry.token for entry in content)
    plain = client.chat.completions.create(model=ADAPTER, messages=MESSAGES, max_tokens=5, temperature=0)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None
    bad_request(
        lambda: client.chat.completions.create(model=ADAPTER, messages=MESSAGES, top_logprobs=2),  # type: ignore[arg-type]
        "top_logprobs",
    )
    bad_request(
        lambda: client.chat.completions.create(model=ADAPTER, messages=MESSAGES, logprobs=True, top_logprobs=21),  # type: ignore[arg-type]
        "top_logprobs",
    )


def test_chat_streams_n_choices_with_logprobs(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": ADAPTER, "messages": MESSAGES, "max_tokens": 6, "n": 2, "seed": 9,
                              "logprobs": True, "top_logprobs": 1, "extra_body": ANY}  # fmt: skip
    whole = client.chat.completions.create(**kwargs)
    assert [c.index for c in whole.choices] == [0, 1]
    texts: dict[int, str] = {}
    tokens: dict[int, int] = {}
    roles = set()
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            if c.delta.role:
                roles.add(c.index)
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            tokens[c.index] = (
                tokens.get(c.index, 0) + len(c.logprobs.content or []) if c.logprobs else tokens.get(c.index, 0)
            )
    assert roles == {0, 1}
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert tokens == {0: 6, 1: 6}


def test_json_schema_response_format_constrains_the_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["answer", "count"],
        "additionalProperties": False,
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    for seed in range(4):
        out = client.chat.completions.create(
            model=ADAPTER, messages=MESSAGES, max_tokens=40, temperature=1.0, seed=seed, response_format=fmt
        )  # type: ignore[arg-type]
        assert out.choices[0].finish_reason == "stop", out.choices[0].message.content
        value = json.loads(out.choices[0].message.content or "")
        assert value["answer"] in {"yes", "no"} and 0 <= value["count"] <= 9 and set(value) == {"answer", "count"}
    completion = client.completions.create(
        model=ADAPTER, prompt=PROMPT, max_tokens=40, temperature=0, extra_body={"response_format": fmt}
    )
    assert json.loads(completion.choices[0].text)["answer"] in {"yes", "no"}


def test_json_object_response_format_gives_a_json_object(client: openai.OpenAI) -> None:
    complete = 0
    for seed in range(6):
        out = client.chat.completions.create(
            model=ADAPTER, messages=MESSAGES, max_tokens=64, temperature=1.0, seed=seed,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )  # fmt: skip
        text = out.choices[0].message.content or ""
        assert text.startswith("{"), text
        if out.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
            complete += 1
    assert complete >= 1, "no answer completed its object within 64 tokens"


def test_an_unusable_schema_is_a_400(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    bad_request(
        lambda: client.chat.completions.create(model=ADAPTER, messages=MESSAGES, response_format=fmt),  # type: ignore[arg-type]
        "response_format",
    )
    fmt = {"type": "xml"}
    bad_request(
        lambda: client.chat.completions.create(model=ADAPTER, messages=MESSAGES, response_format=fmt),  # type: ignore[arg-type]
        "response_format",
    )


# ---------------------------------------------------------------- errors (test_basic.py)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"model=user_alice&prompt=hi", "application/x-www-form-urlencoded"),
        (b"{broken", "application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(server: LiveServer, data: bytes, content_type: str) -> None:
    response = requests.post(
        f"{server.url}/v1/completions", data=data, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param", "code"} and error["type"] == "invalid_request_error"


# ---------------------------------------------------------------- models (test_models.py)


def test_models_list_servable_adapters_with_parent_and_root(client: openai.OpenAI, server: LiveServer) -> None:
    raw = client.completions.with_raw_response.create(model="user_broken", prompt=PROMPT, max_tokens=2)
    # a refused adapter fails alone: user_<id> names that user's cascade, which passes over it...
    assert raw.headers.get("X-Saigon-Adapter") != "user_broken"
    assert "user_broken" in (raw.headers.get("X-Saigon-Fallback-Reason") or "")
    models = {m.id: m for m in client.models.list()}
    base = server.engine.model_id
    assert "user_broken" not in models  # ...and is not offered
    assert {base, ADAPTER, "domain_cooking"} <= set(models)
    assert models[base].model_extra is not None
    assert models[base].model_extra["parent"] is None and models[base].model_extra["root"]
    card = client.models.retrieve(ADAPTER)
    assert card.id == ADAPTER and card.owned_by == "saigon"
    assert card.model_extra is not None and card.model_extra["parent"] == base
    assert Path(card.model_extra["root"]).name == "v1"
    assert client.models.retrieve(base).id == base
    for missing in ("user_nobody", "user_broken"):
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(missing)


# ---------------------------------------------------------------- dynamic LoRA (test_lora_adapters.py)


def lora(server: LiveServer, route: str, body: dict[str, Any], token: str | None = ADMIN_TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{server.url}/v1/{route}", json=body, headers=headers, timeout=60)


def test_vllm_load_and_unload_lora_adapter(
    client: openai.OpenAI, server: LiveServer, tiny_llama_dir: Path, adapter_factory: Any
) -> None:
    outside = adapter_factory(tiny_llama_dir, seed=4)
    refused = lora(server, "load_lora_adapter", {"lora_name": "user_dyn", "lora_path": str(outside)})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "path_not_allowed"
    staging = server.state.config.staging_dir
    assert staging is not None
    source = str(shutil.copytree(outside, staging / "user_dyn"))
    body = {"lora_name": "user_dyn", "lora_path": source}
    assert lora(server, "load_lora_adapter", body, token=None).status_code == 401
    loaded = lora(server, "load_lora_adapter", body)
    assert loaded.status_code == 200 and loaded.text == "Success: LoRA adapter 'user_dyn' added successfully."
    assert "user_dyn" in {m.id for m in client.models.list()}
    assert client.completions.create(model="user_dyn", prompt=PROMPT, max_tokens=3).choices
    again = lora(server, "load_lora_adapter", body)
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    assert lora(server, "load_lora_adapter", {**body, "load_inplace": True}).status_code == 200
    unloaded = lora(server, "unload_lora_adapter", {"lora_name": "user_dyn"})
    assert unloaded.status_code == 200 and unloaded.text == "Success: LoRA adapter 'user_dyn' removed successfully."
    assert "user_dyn" not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("user_dyn")
    # user_dyn now names user dyn's cascade, which no longer finds an adapter of their own
    after = client.completions.with_raw_response.create(model="user_dyn", prompt=PROMPT, max_tokens=3)
    assert (
        after.headers.get("X-Saigon-Adapter") != "user_dyn" and "user_dyn" in after.headers["X-Saigon-Fallback-Reason"]
    )
    gone = lora(server, "unload_lora_adapter", {"lora_name": "user_dyn"})
    assert gone.status_code == 404 and "cannot be found" in gone.json()["error"]["message"]
    missing = lora(server, "load_lora_adapter", {"lora_name": "user_dyn2", "lora_path": "/nonexistent/adapter"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "lora_path"
    unnamed = lora(server, "load_lora_adapter", {"lora_path": source})
    assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "lora_name"
    unsafe = lora(server, "load_lora_adapter", {"lora_name": "../etc", "lora_path": source})
    assert unsafe.status_code == 400 and unsafe.json()["error"]["param"] == "lora_name"


def test_what_a_request_leaves_out_comes_from_the_models_generation_config(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """As vLLM serves it: a model that ships top_p 1e-6 samples only its most likely token unless a
    request sets top_p itself."""
    base = Path(shutil.copytree(tiny_llama_dir, tmp_path / "base"))
    config_file = base / "generation_config.json"
    declared = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**declared, "do_sample": True, "top_p": 1e-6}))
    with live_server(make_config(base)) as live:
        assert live.engine.sampling_defaults.top_p == 1e-6
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)

        def answer(seed: int, **extra: Any) -> str:
            out = client.completions.create(
                model=live.engine.model_id, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=seed,
                extra_body=ANY, **extra,
            )  # fmt: skip
            return out.choices[0].text

        greedy = client.completions.create(
            model=live.engine.model_id, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=ANY
        )
        assert {answer(seed) for seed in range(4)} == {greedy.choices[0].text}
        assert len({answer(seed, top_p=1.0) for seed in range(4)}) > 1
