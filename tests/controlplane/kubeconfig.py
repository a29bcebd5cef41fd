"""Reading and writing kubeconfig files (self-contained: credentials are embedded)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any], name: str) -> Path:
    """Writes a kubeconfig with one cluster, one user and one current context, all called `name`.

    `cluster` and `user` are kubeconfig entries (``server``/``certificate-authority-data``,
    ``token``/``client-certificate-data``...).
    """
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Credentials inside: readable by the owner only, from the moment the file exists.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        yaml.safe_dump(document, file, sort_keys=False)
    return path


def cluster_entry(server: str, ca_pem: bytes) -> dict[str, Any]:
    return {"server": server, "certificate-authority-data": _b64(ca_pem)}


def client_cert_user(cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    return {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}


def token_user(token: str) -> dict[str, Any]:
    return {"token": token}


def current_cluster_entry(kubeconfig: Path) -> dict[str, Any]:
    """The cluster entry of the current context, with a relative CA path made absolute
    so that the entry can be copied into a kubeconfig elsewhere."""
    document = yaml.safe_load(kubeconfig.read_text())
    current = document.get("current-context")
    contexts = {entry["name"]: entry["context"] for entry in document.get("contexts") or []}
    if current not in contexts:
        raise ValueError(f"{kubeconfig}: current-context {current!r} names no context")
    cluster_name = contexts[current]["cluster"]
    clusters = {entry["name"]: entry["cluster"] for entry in document.get("clusters") or []}
    if cluster_name not in clusters:
        raise ValueError(f"{kubeconfig}: context {current!r} names unknown cluster {cluster_name!r}")
    entry = dict(clusters[cluster_name])
    ca_path = entry.get("certificate-authority")
    if ca_path:
        entry["certificate-authority"] = str((kubeconfig.parent / ca_path).resolve())
    return entry
