"""One inference, prepared and reported the same way for the Python API and the HTTP API.

`prepare` resolves the adapter cascade, assembles the mesh context and the prompt, and
tokenizes; `report` turns the engine's result into the original API's dict and writes
the audit record. No framework code here: callers run `prepare` off their event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from saigon_runtime.adapters.manager import Resolution
from saigon_runtime.audit import AuditLog, AuditRecord
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.types import (
    DEFAULT_TEMPERATURE,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    new_request_id,
)
from saigon_runtime.errors import InvalidRequest
from saigon_runtime.mesh import MeshError, build_context, build_prompt
from saigon_runtime.mesh.retrieval import DEFAULT_MAX_TOKENS
from saigon_runtime.userstore import UserStore

log = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class Prepared:
    request_id: str
    user_id: str | None
    resolution: Resolution
    prompt: str
    request: GenerationRequest
    mesh_context_used: bool
    user_input: str = ""  # what the user wrote (the audit log's `input`, when prompts are logged)
    metadata: dict[str, object] = field(default_factory=dict)  # the audit log's metadata


def audit_metadata(max_length: int | None, temperature: float, system_prompt: str | None) -> dict[str, object]:
    return {"max_length": max_length, "temperature": temperature, "system_prompt": system_prompt}


class InferenceService:
    def __init__(
        self,
        engine: Engine,
        users: UserStore | None = None,
        audit: AuditLog | None = None,
        *,
        mesh_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.engine = engine
        self.users = users
        self.audit = audit
        self.mesh_max_tokens = mesh_max_tokens
        if users is not None:
            engine.adapters.domains = self.domain_of

    def prepare(
        self,
        user_id: str | None,
        user_input: str,
        *,
        use_mesh_context: bool = True,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = 1.0,
        max_new_tokens: int | None = None,
        system_prompt: str | None = None,
        adapter: str | None = None,
        strict_adapter: bool = False,
        stop: tuple[str, ...] = (),
    ) -> Prepared:
        resolution = self.engine.adapters.resolve(user_id, adapter, strict=strict_adapter)
        context = self.mesh_context(user_id, user_input) if use_mesh_context else None
        prompt = build_prompt(self.engine.tokenizer, user_input, system_prompt, context)
        ids = self.encode(prompt)
        sampling = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=self.max_new_tokens(len(ids), max_new_tokens),
            stop=stop,
        )
        request_id = new_request_id("infer")
        request = GenerationRequest(ids, resolution.adapter, sampling, request_id=request_id)
        metadata = audit_metadata(max_new_tokens, temperature, system_prompt)
        return Prepared(request_id, user_id, resolution, prompt, request, context is not None, user_input, metadata)

    def mesh_context(self, user_id: str | None, query: str) -> str | None:
        """The user's mesh context for `query` within the token budget (None: none relevant)."""
        if self.users is None or user_id is None:
            return None
        try:
            graph = self.users.get_mesh(user_id)
        except MeshError as exc:
            # A broken mesh (or a store that is down) costs this user their context, never their answer.
            log.warning("mesh unusable, serving without context: %s", exc.kind)
            return None
        context = build_context(graph, query, tokenizer=self.engine.tokenizer, max_tokens=self.mesh_max_tokens)
        return context.text if context is not None else None

    def domain_of(self, user_id: str) -> str | None:
        assert self.users is not None
        try:
            return self.users.domain_of(user_id)
        except MeshError as exc:  # the store is down: the cascade goes on without the domain step
            log.warning("user domain unknown: %s", exc.kind)
            return None

    def encode(self, prompt: str) -> list[int]:
        try:
            ids = list(self.engine.tokenizer.encode(prompt))
        except Exception as exc:  # a tokenizer choking on odd input is a bad request
            raise InvalidRequest(f"the prompt cannot be tokenized ({type(exc).__name__})") from None
        if not ids:
            raise InvalidRequest("the prompt is empty once tokenized")
        return ids

    def max_new_tokens(self, prompt_tokens: int, requested: int | None) -> int:
        """Requested new tokens, capped by the server limit and by what the context has left."""
        room = self.engine.max_positions - prompt_tokens
        if room < 1:
            raise InvalidRequest(
                f"the prompt is {prompt_tokens} tokens; this model's context is {self.engine.max_positions}"
            )
        limit = min(room, self.engine.config.max_new_tokens)
        return min(requested if requested is not None else DEFAULT_MAX_NEW_TOKENS, limit)

    def report(self, prepared: Prepared, result: GenerationResult) -> dict[str, object]:
        """The original API's answer for one request (and its audit record)."""
        adapter = prepared.resolution.adapter
        out: dict[str, object] = {
            "output": result.text,
            "adapter_used": adapter.name if adapter else None,
            "adapter_active": adapter.version if adapter else None,
            "adapter_scope": prepared.resolution.scope,
            "fallback_reason": prepared.resolution.fallback_reason,
            "mesh_context_used": prepared.mesh_context_used,
            "device": self.engine.device,
            "latency_ms": round(result.latency_s * 1000.0, 3),
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "request_id": prepared.request_id,
        }
        if self.audit is not None:
            self.audit.submit(
                AuditRecord(
                    request_id=prepared.request_id,
                    user_id=prepared.user_id,
                    adapter_used=adapter.name if adapter else None,
                    adapter_active=adapter.version if adapter else None,
                    mesh_context_used=prepared.mesh_context_used,
                    device=self.engine.device,
                    latency_ms=result.latency_s * 1000.0,
                    tokens_in=result.prompt_tokens,
                    tokens_out=result.completion_tokens,
                    status=result.finish_reason,
                    input=prepared.user_input,
                    prompt=prepared.prompt,
                    output=result.text,
                    metadata=prepared.metadata,
                )
            )
        return out
