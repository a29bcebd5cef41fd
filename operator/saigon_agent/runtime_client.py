"""The runtime's admin API on localhost (bearer-token protected), as the agent uses it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from saigon_agent.desired import Evaluation
from saigon_agent.errors import RuntimeRejected, RuntimeUnavailable


@dataclass(frozen=True)
class EvalAnswer:
    output: str
    loss: float | None  # mean NLL of the asked completion, when one was asked


@dataclass(frozen=True)
class RuntimeAdapter:
    name: str
    version: str | None
    tier: str | None
    loaded_at: str | None
    error: str | None


class RuntimeAdmin:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=2)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            async with self.session.request(method, self.base_url + path, json=body) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                return resp.status, payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeUnavailable(f"runtime admin API unreachable: {exc.__class__.__name__}") from None

    async def ready(self) -> bool:
        try:
            status, _ = await self._call("GET", "/readyz")
        except RuntimeUnavailable:
            return False
        return status == 200

    async def adapters(self) -> dict[str, RuntimeAdapter]:
        status, payload = await self._call("GET", "/admin/adapters")
        if status != 200 or not isinstance(payload, dict):
            raise RuntimeUnavailable(f"listing adapters answered HTTP {status}")
        out: dict[str, RuntimeAdapter] = {}
        for item in payload.get("adapters") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            out[item["name"]] = RuntimeAdapter(
                name=item["name"],
                version=item.get("active_version") or item.get("version"),
                tier=item.get("tier"),
                loaded_at=iso_time(item.get("loaded_at")),
                error=item.get("error"),
            )
        return out

    async def load(self, name: str, version: str, path: str) -> str | None:
        """Loads `path` as name@version and makes it current; returns the runtime's loaded_at."""
        status, payload = await self._call(
            "POST", "/admin/adapters/load", {"name": name, "version": version, "path": path}
        )
        if status == 200:
            return iso_time(payload.get("loaded_at")) if isinstance(payload, dict) else None
        message = _error_message(payload) or f"HTTP {status}"
        if status in (400, 404, 409, 413, 422):
            raise RuntimeRejected(f"runtime rejected the adapter: {message}")
        raise RuntimeUnavailable(f"runtime could not load the adapter now: {message}")

    async def evaluate(self, name: str, version: str, prompts: list[Evaluation]) -> list[EvalAnswer]:
        """Greedy answers of name@version (current or not) to `prompts`, with the loss of each completion."""
        items = []
        for e in prompts:
            item: dict[str, object] = {"prompt": e.prompt, "max_tokens": e.max_tokens}
            if e.completion is not None:
                item["completion"] = e.completion
            items.append(item)
        status, payload = await self._call(
            "POST", "/admin/adapters/evaluate", {"name": name, "version": version, "prompts": items}
        )
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("results"), list):
            answers = [_answer(r) for r in payload["results"]]
            if len(answers) == len(prompts):
                return answers
        message = _error_message(payload) or f"HTTP {status}"
        if status in (400, 404, 409, 422):
            raise RuntimeRejected(f"runtime refused the evaluation: {message}")
        raise RuntimeUnavailable(f"evaluation failed: {message}")

    async def version_stats(self, name: str) -> dict[str, VersionFigures]:
        """Requests, errors and p99 latency the runtime answered with each version of `name`."""
        status, payload = await self._call("POST", "/admin/adapters/stats", {"name": name})
        if status != 200 or not isinstance(payload, dict):
            raise RuntimeUnavailable(f"adapter stats answered HTTP {status}")
        out: dict[str, VersionFigures] = {}
        for item in payload.get("versions") or []:
            if isinstance(item, dict) and isinstance(item.get("version"), str):
                p99 = item.get("p99_ms")
                out[item["version"]] = VersionFigures(
                    requests=int(item.get("requests") or 0),
                    errors=int(item.get("errors") or 0),
                    p99_ms=float(p99) if isinstance(p99, int | float) else None,
                )
        return out

    async def unload(self, name: str, version: str | None = None) -> None:
        body: dict[str, Any] = {"name": name}
        if version is not None:
            body["version"] = version
        status, payload = await self._call("POST", "/admin/adapters/unload", body)
        if status in (200, 204, 404):
            return
        raise RuntimeUnavailable(f"unloading answered HTTP {status}: {_error_message(payload)}")


@dataclass(frozen=True)
class VersionFigures:
    requests: int
    errors: int
    p99_ms: float | None


def iso_time(value: object) -> str | None:
    """The runtime reports times as epoch seconds; reports carry RFC 3339."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    return value if isinstance(value, str) else None


def _answer(item: object) -> EvalAnswer:
    if not isinstance(item, dict):
        return EvalAnswer("", None)
    return EvalAnswer(str(item.get("output", "")), number(item.get("loss")))


def _error_message(payload: Any) -> str | None:
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or "")[:500] or None
        if isinstance(err, str):
            return err[:500]
    return None


def number(value: object) -> float | None:
    """A JSON number as a float (never a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
