"""A small asyncio Kubernetes API client (aiohttp), shared by the operator and the agent.

Credentials come from a kubeconfig (parsed by the official `kubernetes` package) or
from the in-cluster service account, whose token file is re-read so rotated
tokens keep working. Only the verbs Saigon needs: get, list, watch, create,
patch (merge, strategic, JSON, server-side apply) and delete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Kinds the operator creates, with their API prefix and plural.
KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


class Gone(ApiError):
    """The watch's resourceVersion is too old: list again."""


class CredentialsError(Exception):
    """No usable Kubernetes credentials: a missing or broken kubeconfig, outside a pod."""


@dataclass
class Credentials:
    host: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    token: str | None = None
    token_file: str | None = None

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> Credentials:
        """In-cluster when running in a pod and no kubeconfig is given; the kubeconfig otherwise."""
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        from kubernetes import client, config  # deferred: a heavy import only needed here

        configuration = client.Configuration()
        source = f"kubeconfig {kubeconfig}" if kubeconfig else "the default kubeconfig (~/.kube/config)"
        try:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise CredentialsError(
                f"cannot read Kubernetes credentials from {source} (--kubeconfig, $KUBECONFIG): {exc}"
            ) from None
        token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
        if token and token.lower().startswith("bearer "):
            token = token[7:]
        return cls(
            host=configuration.host.rstrip("/"),
            ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            verify=bool(configuration.verify_ssl),
            token=token or None,
        )

    @classmethod
    def in_cluster(cls) -> Credentials:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return cls(
            host=f"https://{host}:{port}",
            ca_file=str(_SA_DIR / "ca.crt"),
            token_file=str(_SA_DIR / "token"),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.host.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class KubeClient:
    def __init__(self, credentials: Credentials, *, timeout_s: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = credentials.token
        self._token_read_at = 0.0
        # Called before every write; raises to refuse it (the operator's leader fencing).
        self.write_guard: Callable[[], None] | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._current_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _current_token(self) -> str | None:
        path = self.credentials.token_file
        if path and time.monotonic() - self._token_read_at > 60:
            self._token = Path(path).read_text().strip()
            self._token_read_at = time.monotonic()
        return self._token

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        if method != "GET" and self.write_guard is not None:
            self.write_guard()
        try:
            async with self.session.request(
                method,
                self.credentials.host + path,
                params=params,
                data=data,
                headers=self._headers(content_type if data is not None else None),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _error(resp.status, text)
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(503, "Unreachable", f"{method} {path}: {exc!r}") from exc

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: object) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: object) -> dict[str, Any]:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: object) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    async def strategic_patch(self, path: str, body: object) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type="application/strategic-merge-patch+json")

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=ops, content_type="application/json-patch+json")

    async def apply(self, path: str, body: object, *, field_manager: str, force: bool = True) -> dict[str, Any]:
        """Server-side apply: idempotent create-or-update of the fields this manager owns."""
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self.request("PATCH", path, params=params, body=body, content_type="application/apply-patch+yaml")

    async def delete(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("DELETE", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(
        self, path: str, *, resource_version: str, params: Mapping[str, str] | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yields (type, object) from one watch request until the server ends it.

        Raises Gone when the resourceVersion has expired (the caller lists again).
        """
        query = dict(params or {})
        query.update(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_s),
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s + 30)
        try:
            async with self.session.get(
                self.credentials.host + path, params=query, headers=self._headers(), timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    raise _error(resp.status, await resp.text())
                # Split lines by hand: aiohttp's line reader caps lines at 128 KiB, and an
                # object with a large report annotation is longer than that.
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise _error(int(obj.get("code") or 500), json.dumps(obj))
                        yield kind, obj
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(503, "Unreachable", f"watch {path}: {exc!r}") from exc


def _error(status: int, text: str) -> ApiError:
    reason, message = "", text[:500]
    try:
        body = json.loads(text)
        reason, message = str(body.get("reason", "")), str(body.get("message", message))
    except ValueError:
        pass
    cls = Gone if status == 410 else ApiError
    return cls(status, reason, message)


def object_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    return _join(prefix, namespace, plural, name, subresource)


def custom_path(
    group: str, version: str, plural: str, namespace: str, name: str | None = None, subresource: str | None = None
) -> str:
    return _join(f"/apis/{group}/{version}", namespace, plural, name, subresource)


def _join(prefix: str, namespace: str, plural: str, name: str | None, subresource: str | None) -> str:
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


LIST_PAGE = 500  # objects per list request: a relist of 10,000 adapters is never one response in memory


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with metadata.managedFields removed (in place): the API server's field-ownership
    records, over half of a parsed SaigonAdapter, which nothing in Saigon reads."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


async def list_and_watch(
    client: KubeClient,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    on_relist: Any = None,
    on_error: Callable[[ApiError], None] | None = None,
    backoff_s: float = 1.0,
    page: int = LIST_PAGE,
    keep: Callable[[dict[str, Any]], Any] | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """An informer loop: list (yielding each item as "SYNC"), then watch. Like client-go's reflector,
    a broken watch resumes from the last resourceVersion seen (an API server restart costs no
    relist of every object); only 410 Gone (that version is compacted away) lists again. The list
    comes in pages of `page` objects, and objects come without managedFields.

    `on_relist(items)` (optional) is awaited after every list with all items, so the caller
    can drop objects that vanished while it was not watching; with `keep`, with `keep(item)` of
    each instead (a caller that needs only their names need not hold every object until then).
    Every other API error is logged and passed to `on_error` (optional) before the retry, with a
    backoff up to 30 s: a caller that cannot work without the watch (the agent) turns it into a
    condition and unreadiness.
    """
    delay = backoff_s
    version: str | None = None
    while True:
        try:
            if version is None:
                items: list[Any] = []
                paging = {**(params or {}), "limit": str(page)}
                while True:
                    listing = await client.get(path, params=paging)
                    for item in listing.get("items") or []:
                        without_managed_fields(item)
                        if on_relist is not None:
                            items.append(item if keep is None else keep(item))
                        yield "SYNC", item
                    token = (listing.get("metadata") or {}).get("continue")
                    if not token:
                        break
                    paging["continue"] = token
                if on_relist is not None:
                    await on_relist(items)
                version = str(listing["metadata"]["resourceVersion"])
                delay = backoff_s
            async for kind, obj in client.watch(path, resource_version=version, params=params):
                version = obj.get("metadata", {}).get("resourceVersion", version)
                delay = backoff_s
                if kind != "BOOKMARK":
                    yield kind, without_managed_fields(obj)
        except Gone:
            log.info("the watch of %s expired (410 Gone); listing again", path)
            version = None
        except ApiError as exc:
            log.warning("list/watch of %s failed (retrying in %.0f s): %s", path, delay, exc)
            if on_error is not None:
                on_error(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
