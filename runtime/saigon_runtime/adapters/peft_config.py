"""`adapter_config.json` as untrusted input: a depth-bounded parse into a typed model.

Whoever writes an adapter controls these bytes, so parsing is bounded (size, nesting) and every
value the runtime uses is typed and range-checked: a malformed config is a permanent refusal that
names the field, never a 500 or a crash deep inside the loader.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from saigon_runtime.adapters.patterns import MAX_PATTERN_CHARS, MAX_PATTERNS, PatternError, PatternTable

MAX_CONFIG_BYTES = 256 * 1024
# jiter (pydantic's JSON parser) refuses nesting deeper than 200 with a ValueError, never a
# RecursionError; a LoRA config needs three levels, so anything past this is refused by name.
MAX_CONFIG_DEPTH = 8
# Beyond this an alpha is no longer a scale but an overflow: LoRA alphas are single or low double digits.
MAX_ALPHA = 1e6
MAX_CONFIG_RANK = 1 << 16

Alpha = Annotated[float, Field(gt=0.0, le=MAX_ALPHA, allow_inf_nan=False)]
Rank = Annotated[int, Field(ge=1, le=MAX_CONFIG_RANK)]
PatternKey = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]


class ConfigRejected(ValueError):
    """The config is unusable; the message names the field and the problem."""


class LoraConfigFile(BaseModel):
    """The fields of a PEFT LoRA config the runtime reads; the others are checked by `unsupported`."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    peft_type: str = "LORA"
    r: Rank = 8
    lora_alpha: Alpha = 8.0  # strict floats take JSON integers too
    use_rslora: bool = False
    use_dora: bool = False
    bias: str = "none"
    rank_pattern: Annotated[dict[PatternKey, Rank], Field(max_length=MAX_PATTERNS)] = Field(default_factory=dict)
    alpha_pattern: Annotated[dict[PatternKey, Alpha], Field(max_length=MAX_PATTERNS)] = Field(default_factory=dict)

    @field_validator("rank_pattern", "alpha_pattern", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value  # older PEFT versions write null for "no patterns"

    def extra_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def rank_patterns(self) -> PatternTable:
        return PatternTable({k: float(v) for k, v in self.rank_pattern.items()}, field="rank_pattern")

    def alpha_patterns(self) -> PatternTable:
        return PatternTable({k: float(v) for k, v in self.alpha_pattern.items()}, field="alpha_pattern")


def parse_config(raw: bytes) -> LoraConfigFile:
    """Parse and type-check the bytes of an adapter_config.json; raise ConfigRejected naming the problem."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigRejected(f"it is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = pydantic_core.from_json(raw)
    except ValueError as exc:
        reason = "it nests too deeply" if "recursion limit" in str(exc) else f"it is not valid JSON ({exc})"
        raise ConfigRejected(reason) from None
    if not isinstance(data, dict):
        raise ConfigRejected("it must hold a JSON object")
    if _depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigRejected(f"it nests deeper than {MAX_CONFIG_DEPTH} levels")
    try:
        config = LoraConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigRejected(f"{where}: {first['msg']}") from None
    try:
        config.rank_patterns()
        config.alpha_patterns()
    except PatternError as exc:
        raise ConfigRejected(str(exc)) from None
    return config


def _depth(value: object) -> int:
    """Nesting depth, iteratively (the parser already bounds it, this bounds our own use)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest
