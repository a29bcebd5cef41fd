"""Errors the runtime reports to a caller (engine, adapters, Python API); `status` and `kind` map to HTTP."""

from __future__ import annotations


class EngineError(Exception):
    """Base class for errors the engine reports to a caller; `status` maps to HTTP."""

    status = 500
    kind = "engine_error"


class AdapterNotFound(EngineError):
    status = 404
    kind = "adapter_not_found"


class AdapterRejected(EngineError):
    """The adapter exists but cannot be served: corrupt, unsafe or incompatible."""

    status = 422
    kind = "adapter_rejected"


class EngineBusy(EngineError):
    """Queue full, or every device slot held by running requests past the wait bound."""

    status = 429
    kind = "busy"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineStopped(EngineError):
    status = 503
    kind = "shutting_down"


class InvalidRequest(EngineError):
    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault, when one is
