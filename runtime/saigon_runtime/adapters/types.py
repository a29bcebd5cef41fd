"""The adapter types the engine consumes: what a request names (AdapterRef), the shape of one
LoRA target (ModuleShape) and an adapter's tensors in a device slot (DeviceAdapter)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no torch at import: the CLI, the HTTP protocol and the Python API's types load without it
    import torch

    from saigon_runtime.adapters.format import HostAdapter

    ModuleWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
_serials = itertools.count(1)


class VersionHold:
    """Shared by the in-flight refs of one version. When that version is unloaded while they
    wait, its host copy moves here and lives exactly as long as they do; until then it holds
    nothing, so waiting requests pin no memory beyond the host tier's max_cpu_loras."""

    __slots__ = ("__weakref__", "host")

    def __init__(self) -> None:
        self.host: HostAdapter | None = None


@dataclass(frozen=True)
class AdapterRef:
    """A resolved adapter: a name at one immutable version.

    A ref the manager resolved carries its version's hold (not part of its identity): a request
    holding it is served even if the version is unloaded and its files removed before the engine
    admits it (a promotion collecting the previous version while requests for it still wait).
    """

    name: str
    version: str
    hold: VersionHold | None = field(default=None, compare=False, repr=False)

    @property
    def scope(self) -> str:
        return scope_of(self.name)


def scope_of(name: str | None) -> str:
    """The bounded label for an adapter name: user, domain, global, named, or base for none."""
    if name is None:
        return "base"
    if name.startswith("user_"):
        return "user"
    if name.startswith("domain_"):
        return "domain"
    if name == "global":
        return "global"
    return "named"


@dataclass(frozen=True)
class ModuleShape:
    in_features: int
    out_features: int


def is_expert_module(name: str) -> bool:
    """A layer inside a mixture-of-experts expert list: it sees a routed subset of the tokens."""
    return ".experts." in f".{name}." or name.endswith(".experts")


@dataclass(eq=False)
class DeviceAdapter:
    """An adapter's tensors on the compute device: what occupies one slot."""

    key: tuple[str, str]  # (name, version)
    modules: ModuleWeights
    rank: int
    nbytes: int
    # Compositions are cached by serial, never by id(): a freed slot's id may be reused.
    serial: int = field(default_factory=lambda: next(_serials))
