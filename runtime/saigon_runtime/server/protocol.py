"""Request and response bodies of the HTTP API, as pydantic models.

These models are the single description of the wire format: handlers validate with them and
`/openapi.json` is generated from them. Requests are strict (no "5" for 5) so the schema and the
server agree on what is valid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from saigon_contract.names import ACTIVE_LINK, USER_ID_PATTERN, VERSION_PATTERN

from saigon_runtime.adapters.names import NAME_RE
from saigon_runtime.engine.types import (
    DEFAULT_TEMPERATURE,
    LOGIT_BIAS_RANGE,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_LOGPROBS,
    PENALTY_RANGE,
    REPETITION_PENALTY_MAX,
)
from saigon_runtime.mesh.schema import MeshGraph

__all__ = ["USER_ID_PATTERN", "VERSION_PATTERN", "MeshGraph"]

# JSON-Schema patterns of saigon_contract.names / saigon_runtime.adapters.names (the same rules).
ADAPTER_NAME_PATTERN = rf"^(?!.*\.\.)(?!.*\n)(?!{ACTIVE_LINK}$)({NAME_RE.pattern})$"

# Text fields are bounded by the body-size limit; these caps keep one field from using all of it.
MAX_TEXT_CHARS = 200_000
MAX_STOP_SEQUENCES = 4
MAX_MESSAGES = 256
MAX_PATH_CHARS = 4096
ABSOLUTE_PATH_PATTERN = r"^/[^\x00]*$"


def _integral(value: object) -> object:
    # JSON Schema counts 2.0 as an integer; strict pydantic would not. Agree with the schema.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Goes after the constraints in Annotated[...] so they still reach the JSON Schema.
INTEGRAL = BeforeValidator(_integral)
UserId = Annotated[str, Field(pattern=USER_ID_PATTERN, examples=["alice"])]
AdapterName = Annotated[str, Field(pattern=ADAPTER_NAME_PATTERN, examples=["user_alice"])]
AdapterVersion = Annotated[str, Field(pattern=VERSION_PATTERN, examples=["v1"])]
Temperature = Annotated[float, Field(ge=0.0, le=2.0, description="0 means greedy decoding")]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), INTEGRAL]
Penalty = Annotated[float, Field(ge=PENALTY_RANGE[0], le=PENALTY_RANGE[1])]
AbsolutePath = Annotated[str, Field(max_length=MAX_PATH_CHARS, pattern=ABSOLUTE_PATH_PATTERN)]
StopSequence = Annotated[str, Field(min_length=1, max_length=256)]


class _Request(BaseModel):
    # Nothing is accepted and ignored: a field this server does not implement is refused by name.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, regex_engine="python-re")


def _without_nulls(data: Any, names: frozenset[str]) -> Any:
    """`data` less the `names` whose value is null: an OpenAI field this server does not implement,
    sent as null by a client that always writes it, means "absent"; any other value is refused."""
    if isinstance(data, dict) and any(data.get(name, 0) is None for name in names):
        return {key: value for key, value in data.items() if not (value is None and key in names)}
    return data


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- errors


class ErrorDetail(_Response):
    type: str = Field(description="error class, e.g. invalid_request_error, rate_limit_error")
    message: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail


# ---------------------------------------------------------------- health


class HealthResponse(_Response):
    status: Literal["ok", "failed"]
    detail: str | None = None


class ReadyResponse(_Response):
    ready: bool
    base_model_loaded: bool
    missing_adapters: list[str]
    draining: bool
    load_error: str | None = Field(
        default=None, description="why the base model failed to load (a CUDA failure or out of memory included)"
    )
    device_fallback: str | None = Field(
        default=None, description="why the model serves from the CPU instead of the accelerator (SAIGON_CPU_FALLBACK)"
    )


# ---------------------------------------------------------------- original Saigon API


class InferRequest(_Request):
    user_id: UserId | None = Field(
        None, description="whose adapter and mesh serve the request; taken from the token when auth is on"
    )
    input_text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    use_mesh_context: bool = True
    temperature: Temperature = DEFAULT_TEMPERATURE
    max_length: Annotated[int, Field(ge=1, description="maximum number of new tokens"), INTEGRAL] | None = None
    system_prompt: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    adapter: AdapterName | None = Field(None, description="serve with this adapter instead of the cascade")
    top_p: TopP = 1.0
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = Field(
        None, description="end the answer before the first of these strings"
    )

    def stop_sequences(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)


class SingleInferRequest(InferRequest):
    stream: bool = Field(
        False,
        description="answer with server-sent events: `text` deltas, then one event with the whole InferResponse "
        "under `result`, then `data: [DONE]`",
    )


def stop_tuple(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


class InferResponse(_Response):
    output: str
    adapter_used: str | None = Field(description="the adapter that served, or null for the base model")
    adapter_active: str | None = Field(description="the version of that adapter that served")
    adapter_scope: Literal["user", "domain", "global", "named", "base"]
    fallback_reason: str | None = Field(description="why adapters earlier in the cascade were passed over")
    mesh_context_used: bool
    device: str
    latency_ms: float
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    request_id: str


class InferStreamEvent(_Response):
    """One server-sent event of a streamed /api/saigon/infer answer."""

    text: str = Field(description="text added since the previous event")
    result: InferResponse | None = Field(default=None, description="set on the last event only: the whole answer")


class BatchInferRequest(_Request):
    requests: Annotated[list[InferRequest], Field(min_length=1)]
    parallel: bool = Field(True, description="submit all at once so the engine batches them together")


class BatchInferResponse(_Response):
    results: list[InferResponse]
    count: int
    total_latency_ms: float


class HotSwapRequest(_Request):
    user_id: UserId
    new_adapter_path: AbsolutePath
    backup_current: bool = True


class HotSwapResponse(_Response):
    success: bool
    adapter: str
    version: str
    previous_version: str | None
    loaded_at: float | None


class ResidentAdapter(_Response):
    name: str
    version: str
    tier: Literal["device", "host", "disk"]
    pinned: bool


class CacheTiers(_Response):
    device: int
    host: int
    max_device: int
    max_host: int
    hits: int
    misses: int
    loads: int
    evictions: int


class StatusResponse(_Response):
    engine_initialized: bool
    current_user: str | None
    current_adapter: str | None
    device: str | None
    base_model: str | None
    cache_enabled: bool
    cache_size: int
    cache_max_size: int
    cache: CacheTiers | None
    resident_adapters: list[ResidentAdapter]
    queue_depth: int
    running: int
    load_error: str | None = None
    device_fallback: str | None = None


class MeshPutResponse(_Response):
    user_id: str
    nodes: int
    edges: int


# ---------------------------------------------------------------- admin API


class AdapterInfoModel(_Response):
    name: str
    version: str | None
    active_version: str | None
    tier: Literal["device", "host", "disk"]
    pinned: bool
    loaded_at: float | None
    error: str | None


class AdapterListResponse(_Response):
    adapters: list[AdapterInfoModel]


class AdapterLoadRequest(_Request):
    name: AdapterName
    version: AdapterVersion | None = Field(None, description="defaults to the version `active` points at")
    path: AbsolutePath | None = Field(None, description="adapter directory; defaults to adapters_dir/<name>/<version>")


class AdapterLoadResponse(_Response):
    name: str
    version: str
    loaded_at: float | None


class AdapterUnloadRequest(_Request):
    name: AdapterName
    version: AdapterVersion | None = None


class AdapterUnloadResponse(_Response):
    name: str
    version: str | None
    unloaded: bool


class AdapterPinRequest(_Request):
    name: AdapterName
    pinned: bool


class AdapterPinResponse(_Response):
    name: str
    pinned: bool


class LoadLoraAdapterRequest(_Request):
    """vLLM's dynamic LoRA loading request."""

    lora_name: AdapterName
    lora_path: AbsolutePath = Field(description="a PEFT adapter directory; imported as a new version of lora_name")
    load_inplace: bool = Field(False, description="replace an adapter already loaded under this name")


class UnloadLoraAdapterRequest(_Request):
    lora_name: AdapterName


class EvalPrompt(_Request):
    prompt: Annotated[str, Field(min_length=1, max_length=4096)]
    max_tokens: Annotated[int, Field(ge=1, le=256), INTEGRAL] = 16
    completion: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, description="also score this answer: its mean negative log-likelihood after the prompt"
    )


class AdapterEvalRequest(_Request):
    name: AdapterName
    version: AdapterVersion = Field(description="any version on disk, current or not (a promotion candidate)")
    prompts: list[EvalPrompt] = Field(min_length=1, max_length=32)


class EvalResult(_Response):
    output: str
    completion_tokens: int
    loss: float | None = Field(default=None, description="mean NLL of `completion` in nats per token, if asked")


class AdapterEvalResponse(_Response):
    name: str
    version: str
    results: list[EvalResult]


class AdapterStatsRequest(_Request):
    name: AdapterName


class VersionStatsModel(_Response):
    version: str
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class AdapterStatsResponse(_Response):
    name: str
    versions: list[VersionStatsModel]


# A domain is the `<name>` of `domain_<name>`: the user id's rule.
DomainName = Annotated[str, Field(pattern=USER_ID_PATTERN, examples=["cooking"])]


class UserDomainRequest(_Request):
    domain: DomainName | None = Field(description="the user's domain (serves domain_<name>); null: none")


class UserDomainResponse(_Response):
    user_id: str
    domain: str | None


# ---------------------------------------------------------------- OpenAI-compatible API


class StreamOptions(_Request):
    include_usage: bool = False


MAX_CHOICES = 16  # n
MAX_PROMPTS = 32  # prompts in one completions request
LogitBias = Annotated[
    dict[
        Annotated[str, Field(max_length=12)],
        Annotated[float, Field(ge=LOGIT_BIAS_RANGE[0], le=LOGIT_BIAS_RANGE[1])],
    ],
    Field(max_length=MAX_LOGIT_BIAS_ENTRIES, description="token id (as a string) -> added to its logit"),
]


class ResponseFormatText(_Request):
    type: Literal["text"]


class ResponseFormatJsonObject(_Request):
    type: Literal["json_object"]


class JsonSchemaFormat(_Request):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=4096)] | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema", description="a JSON Schema document")
    strict: bool | None = None


class ResponseFormatJsonSchema(_Request):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]
# OpenAI parameters this server does not implement: accepted as null (absent), otherwise refused
# by name like any unknown field.
UNSUPPORTED_PARAMS = frozenset({"suffix", "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
                                "audio", "modalities", "prediction", "web_search_options", "store", "metadata",
                                "service_tier", "reasoning_effort"})  # fmt: skip
UNSUPPORTED_MESSAGE_FIELDS = frozenset({"tool_calls", "function_call", "refusal", "audio", "annotations"})


_MODEL_DEFAULT = "null or absent: the value the model's generation_config.json sets, else {default}"


class _SamplingFields(_Request):
    @model_validator(mode="before")
    @classmethod
    def _null_means_absent(cls, data: Any) -> Any:
        return _without_nulls(data, UNSUPPORTED_PARAMS)

    model: Annotated[
        str,
        Field(
            min_length=1, max_length=256, description="the base model, an adapter, or user_<id> (that user's cascade)"
        ),
    ]
    temperature: Temperature | None = Field(None, description=_MODEL_DEFAULT.format(default=1))
    top_p: TopP | None = Field(None, description=_MODEL_DEFAULT.format(default=1))
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES, description="choices per prompt"), INTEGRAL] = 1
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="only with `stream`")
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Seed | None = Field(None, description="any 64-bit integer; with n > 1 each choice derives its own")
    user: Annotated[str, Field(max_length=256)] | None = Field(
        None,
        description="any end-user tag (as in OpenAI); a Saigon user id ([A-Za-z0-9][A-Za-z0-9_.-]{0,62}) also "
        "selects that user's cascade, mesh and audit identity, like X-Saigon-User",
    )
    ignore_eos: bool = Field(False, description="extension (as in vLLM): keep generating past end-of-sequence")
    min_tokens: Annotated[int, Field(ge=0), INTEGRAL] = Field(
        0,
        description="extension (as in vLLM): end-of-sequence cannot be drawn, and stop strings do not match, "
        "before this many tokens; at most the answer's maximum length; not with response_format",
    )
    mesh_context: bool | None = Field(
        None,
        description="extension: add the user's mesh context to the prompt (as /api/saigon/infer does); "
        "null: the model's default (SAIGON_MESH_DEFAULT). The openai client sends it with "
        "extra_body={'mesh_context': True}",
    )
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0, le=REPETITION_PENALTY_MAX)] | None = Field(
        None,
        description="extension (as in vLLM): >1 discourages tokens of the prompt and the output; "
        + _MODEL_DEFAULT.format(default=1),
    )
    logit_bias: LogitBias | None = None
    response_format: ResponseFormat | None = None
    return_tokens_as_token_ids: bool = Field(
        False, description="extension (as in vLLM): name tokens in logprobs as `token_id:<id>`"
    )

    def stop_sequences(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)


TokenIds = Annotated[list[Annotated[int, Field(ge=0), INTEGRAL]], Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Prompt = (
    Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]],
        Field(min_length=1, max_length=MAX_PROMPTS),
    ]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
)


class CompletionRequest(_SamplingFields):
    prompt: Prompt = Field(description="a string, a list of strings, a list of token ids, or a list of such lists")
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = 16
    echo: bool = Field(False, description="prepend the prompt to each choice's text")
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), INTEGRAL] | None = Field(
        None, description=f"log-probability of each token and of the up to {MAX_LOGPROBS} most likely ones"
    )
    best_of: Annotated[int, Field(ge=1), INTEGRAL] | None = Field(None, description="only equal to n (or absent)")

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a string, or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(item, int) for item in prompt):
            return [[int(item) for item in prompt]]  # type: ignore[arg-type]
        return [item if isinstance(item, str) else list(item) for item in prompt]  # type: ignore[arg-type]


class TextPart(_Request):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Annotated[list[TextPart], Field(max_length=64)]
    name: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_absent(cls, data: Any) -> Any:
        return _without_nulls(data, UNSUPPORTED_MESSAGE_FIELDS)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    logprobs: bool = Field(False, description="return the log-probability of each generated token")
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), INTEGRAL] | None = Field(
        None, description=f"with `logprobs`: also the up to {MAX_LOGPROBS} most likely tokens at each position"
    )


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Response):
    content: list[ChatTokenLogprob] | None


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(_Response):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = Field(description="the base model an adapter applies to; null for the base")
    root: str


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def json_body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
