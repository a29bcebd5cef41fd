"""On-demand loads: the runtime asks its pod's agent for a user adapter placed on other pods.

The router sends a user to a pod that does not hold their adapter only when every pod that does is
down; that pod's runtime then asks its agent (on localhost, with the admin token) to fetch, verify
and load the adapter now, and answers with it. The agent keeps it for its linger time after the
last demand. One definition of the exchange for both sides.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from saigon_contract.names import check_adapter_name

DEMAND_PATH = "/demand"
# What the runtime's on-demand loads may wait for (a download and a verification), in seconds.
DEFAULT_TIMEOUT_S = 30.0


class DemandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(max_length=80)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=300)

    @field_validator("adapter")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_adapter_name(v)  # a full match, no "..": it names a directory


class DemandResult(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # loaded: the runtime serves it now; unknown: no SaigonAdapter of this model declares it;
    # failed: it cannot be loaded here (reason); pending: not loaded within the timeout.
    state: Literal["loaded", "unknown", "failed", "pending"]
    version: str | None = None
    reason: str | None = None
