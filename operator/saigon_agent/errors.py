"""Why syncing one adapter failed, and whether trying again can help."""

from __future__ import annotations


class SyncError(Exception):
    """`reason` is a CamelCase word for status conditions; `transient` says whether a retry may help."""

    reason = "SyncFailed"
    transient = False

    def __init__(self, message: str, *, reason: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if transient is not None:
            self.transient = transient


class SourceRejected(SyncError):
    """The source itself is not allowed: wrong scheme, a private address, an unsafe path."""

    reason = "SourceRejected"


class FetchFailed(SyncError):
    reason = "FetchFailed"
    transient = True


class TooLarge(SyncError):
    reason = "ArtifactTooLarge"


class DigestMismatch(SyncError):
    reason = "DigestMismatch"


class InvalidArtifact(SyncError):
    reason = "InvalidArtifact"


class VersionConflict(SyncError):
    """The version is already on disk with another digest: versions are immutable."""

    reason = "VersionConflict"


class RuntimeRejected(SyncError):
    reason = "RuntimeRejected"


class RuntimeUnavailable(SyncError):
    reason = "RuntimeUnavailable"
    transient = True
