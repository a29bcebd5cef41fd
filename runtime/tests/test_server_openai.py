"""The official `openai` client against a live server: models, completions, chat, streaming, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, SamplingParams
from saigon_runtime.testing.tiny import install_adapter
from server_support import LiveServer, live_server, make_config

PROMPT = "the cat and the dog"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    adapters = tmp_path_factory.mktemp("openai") / "adapters"
    install_adapter(adapters, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(adapters, "domain_cooking", "v1", adapter_factory(tiny_llama_dir, seed=2))
    with live_server(make_config(tiny_llama_dir, adapters_dir=adapters)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def direct_greedy(server: LiveServer, prompt: str, adapter: AdapterRef | None, max_new_tokens: int) -> str:
    engine = server.engine
    request = GenerationRequest(
        prompt_ids=engine.tokenizer.encode(prompt),
        adapter=adapter,
        sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens),
    )
    return engine.generate(request, timeout=60).text


def test_models_lists_the_base_and_each_adapter_with_its_parent(client: openai.OpenAI, server: LiveServer) -> None:
    models = {m.id: m for m in client.models.list()}
    base = server.engine.model_id
    assert set(models) == {base, "user_alice", "domain_cooking"}
    assert models[base].model_extra is not None and models[base].model_extra["parent"] is None
    for name in ("user_alice", "domain_cooking"):
        assert models[name].model_extra is not None and models[name].model_extra["parent"] == base
        assert models[name].owned_by == "saigon"


def test_completion_sends_the_prompt_as_given_to_the_named_adapter(client: openai.OpenAI, server: LiveServer) -> None:
    completion = client.completions.create(model="user_alice", prompt=PROMPT, max_tokens=8, temperature=0)
    expected = direct_greedy(server, PROMPT, AdapterRef("user_alice", "v1"), 8)
    assert completion.choices[0].text == expected
    assert completion.choices[0].finish_reason in {"length", "stop"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(server.engine.tokenizer.encode(PROMPT))
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    base = client.completions.create(model=server.engine.model_id, prompt=PROMPT, max_tokens=8, temperature=0)
    assert base.choices[0].text == direct_greedy(server, PROMPT, None, 8)
    assert base.choices[0].text != completion.choices[0].text, "the adapter must change the answer"


def test_streamed_completion_adds_up_to_the_non_streamed_one(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="domain_cooking", prompt=PROMPT, max_tokens=12, temperature=0)
    stream = client.completions.create(
        model="domain_cooking",
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_completion_streams_role_then_content_then_usage(client: openai.OpenAI) -> None:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello world"},
    ]
    whole = client.chat.completions.create(model="user_alice", messages=messages, max_tokens=10, temperature=0)  # type: ignore[arg-type]
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage is not None and whole.usage.completion_tokens >= 1
    stream = client.chat.completions.create(
        model="user_alice",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_max_completion_tokens_bounds_the_answer(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="user_alice",
        messages=[{"role": "user", "content": "tell me about the sea"}],
        max_completion_tokens=3,
        temperature=0.9,
        seed=7,
    )
    assert answer.usage is not None and answer.usage.completion_tokens <= 3


def test_an_unknown_model_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    # (user_<id> is a user's cascade, never a 404: see test_server_peruser.py.)
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-adapter", prompt="x", max_tokens=2)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["param"] == "model"


def test_out_of_range_parameters_are_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="user_alice", prompt="x", temperature=5)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "temperature" and body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="user_alice", messages=[], max_tokens=2)
