"""The per-pod report: what one runtime pod serves, written by its agent, read by the operator.

It lives in one annotation on the agent's own Pod (resources.REPORT_ANNOTATION):
the Pod is the natural owner of per-pod truth (it disappears with the pod, so no
stale reports), the agent's RBAC already covers it, and the operator watches pods
anyway. Plain JSON while small; gzip+base64 (prefix "gz:") past GZIP_ABOVE bytes
so that a few thousand adapters stay under the 256 KiB annotation budget.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 1
GZIP_ABOVE = 64 * 1024
MAX_ENCODED = 200 * 1024
_GZ_PREFIX = "gz:"

State = Literal["Pending", "Fetching", "Loading", "Loaded", "Failed", "Unloading"]
STATES: tuple[str, ...] = ("Pending", "Fetching", "Loading", "Loaded", "Failed", "Unloading")


@dataclass(frozen=True)
class GateReport:
    """Promotion gate inputs for one version on one pod (only while that version is a candidate).

    `passed`/`detail`: the evaluation prompts run against that version (None: not run);
    `requests`/`errors`/`p99_ms`: what the runtime answered with that version so far.
    """

    version: str
    passed: bool | None = None
    detail: str | None = None
    requests: int | None = None
    errors: int | None = None
    p99_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        keys = {"p99_ms": "p99Ms"}
        return {keys.get(k, k): v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, raw: object) -> GateReport | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("version"), str):
            return None

        def number(key: str) -> float | None:
            value = raw.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        requests, errors = number("requests"), number("errors")
        passed = raw.get("passed")
        detail = raw.get("detail")
        return cls(
            version=raw["version"][:256],
            passed=passed if isinstance(passed, bool) else None,
            detail=detail[:1024] if isinstance(detail, str) else None,
            requests=int(requests) if requests is not None else None,
            errors=int(errors) if errors is not None else None,
            p99_ms=number("p99Ms"),
        )


@dataclass(frozen=True)
class AdapterReport:
    """One adapter on one pod.

    `version`/`digest`/`loaded_at` describe what the runtime serves now (None: nothing).
    `state` describes the work towards `target` (the version the operator asked for):
    Loaded means target is served; Failed carries `reason` and `error`.
    """

    state: State
    target: str | None = None
    version: str | None = None
    digest: str | None = None
    loaded_at: str | None = None
    reason: str | None = None
    error: str | None = None
    gate: GateReport | None = None

    def to_json(self) -> dict[str, Any]:
        keys = {"loaded_at": "loadedAt"}
        out: dict[str, Any] = {
            keys.get(k, k): getattr(self, k)
            for k in ("state", "target", "version", "digest", "loaded_at", "reason", "error")
        }
        out = {k: v for k, v in out.items() if v is not None}
        if self.gate is not None:
            out["gate"] = self.gate.to_json()
        return out

    @classmethod
    def from_json(cls, raw: object) -> AdapterReport | None:
        if not isinstance(raw, dict):
            return None
        state = raw.get("state")
        if state not in STATES:
            return None

        def text(key: str) -> str | None:
            value = raw.get(key)
            return value[:2048] if isinstance(value, str) else None

        return cls(
            state=state,
            target=text("target"),
            version=text("version"),
            digest=text("digest"),
            loaded_at=text("loadedAt"),
            reason=text("reason"),
            error=text("error"),
            gate=GateReport.from_json(raw.get("gate")),
        )


@dataclass(frozen=True)
class PodReport:
    adapters: dict[str, AdapterReport] = field(default_factory=dict)
    # True once the agent has made one full pass over every adapter the pod must serve.
    synced: bool = False
    # Each adapter's entry as decoded JSON: a later decode reuses the reports of unchanged entries.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def encode(self) -> str:
        body = {
            "version": FORMAT_VERSION,
            "synced": self.synced,
            "adapters": {name: rep.to_json() for name, rep in sorted(self.adapters.items())},
        }
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        if len(text) > GZIP_ABOVE:
            text = _GZ_PREFIX + base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
        if len(text) > MAX_ENCODED:
            raise ReportTooLarge(f"report is {len(text)} bytes encoded, over {MAX_ENCODED}")
        return text

    @classmethod
    def decode(cls, text: str | None, previous: PodReport | None = None) -> PodReport:
        """Never raises: a missing or garbled report reads as an empty one. With the pod's
        `previous` report, an entry whose JSON did not change keeps its report object: the
        operator reads every report each time an agent publishes it, and with thousands of
        adapters per pod building each entry again was most of that cost."""
        if not text:
            return cls()
        try:
            if text.startswith(_GZ_PREFIX):
                text = gzip.decompress(base64.b64decode(text[len(_GZ_PREFIX) :])).decode()
            body = json.loads(text)
        except (ValueError, OSError, EOFError):
            return cls()
        if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
            return cls()
        adapters: dict[str, AdapterReport] = {}
        kept: dict[str, Any] = {}
        seen_raw, seen = (previous.raw, previous.adapters) if previous is not None else ({}, {})
        raw_adapters = body.get("adapters")
        if isinstance(raw_adapters, dict):
            for name, raw in raw_adapters.items():
                report = seen.get(name) if seen_raw.get(name) == raw else AdapterReport.from_json(raw)
                if isinstance(name, str) and report is not None:
                    adapters[name] = report
                    kept[name] = raw
        return cls(adapters=adapters, synced=body.get("synced") is True, raw=kept)


class ReportTooLarge(ValueError):
    pass
