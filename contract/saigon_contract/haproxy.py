"""haproxy.cfg for a SaigonModel's router: user affinity by consistent hashing with bounded loads.
The operator renders it for a cluster; the routing benchmark runs the same text on one machine.

A pure function of the router settings and a server source. In a cluster the servers come from
the runtime's headless Service through DNS (`server-template` + `resolvers`); on one machine
(tests, the routing benchmark) they are listed statically. Everything else is the same text.

Routing key: the `X-Saigon-User` header (configurable); without it, the Authorization header
(one bearer token per user); without either, the request goes round-robin. HAProxy cannot hash
a JSON body cheaply, so clients that want affinity send the header.

With placement (saigon_contract.placement), servers are named after their pods and a map file
names each slot's owners: a request with the user header goes to the first owner that is up, then
the next; with no owner up (or no header) the consistent hash picks any replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saigon_contract import placement

# The official image reads its configuration here.
CONFIG_DIR = "/usr/local/etc/haproxy"
CONFIG_FILE = "haproxy.cfg"
PLACEMENT_MAP_FILE = "owners.map"
DEFAULT_USER_HEADER = "X-Saigon-User"
# Response header naming the replica that answered (a server name, never a user id).
REPLICA_HEADER = "X-Saigon-Replica"
BACKEND = "runtime"
_HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class StaticServer:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class StaticServers:
    servers: tuple[StaticServer, ...]


@dataclass(frozen=True)
class DnsServers:
    """`slots` server slots filled from the A records of `fqdn` (a headless Service)."""

    fqdn: str
    port: int
    slots: int
    # Seconds a resolution stays valid; new and gone pods show within about this long.
    hold_valid_s: int = 5


ServerSource = StaticServers | DnsServers


@dataclass(frozen=True)
class PlacementRouting:
    """Route by the placement table in `map_path` (saigon_contract.placement.PlacementTable.map_text);
    up to `ranks` owners are tried in order."""

    map_path: str
    ranks: int = placement.DEFAULT_REPLICAS


@dataclass(frozen=True)
class RouterConfig:
    port: int
    health_port: int = 8404
    bind_address: str = ""  # all addresses
    user_header: str = DEFAULT_USER_HEADER
    # False: plain round-robin (the routing benchmark's baseline).
    affinity: bool = True
    # Bounded loads: no server takes more than this percentage of the average in-flight load;
    # the overflow goes to the next server on the ring. 0 turns it off.
    hash_balance_factor: int = 150
    # Inactivity limit on a request or a stream (between two chunks), in seconds.
    timeout_s: int = 600
    maxconn: int = 4096
    retries: int = 2
    check_interval_ms: int = 1000
    # Static servers only: their names are the pod names the map file holds.
    placement: PlacementRouting | None = None


def render(config: RouterConfig, servers: ServerSource) -> str:
    if not _HEADER_RE.match(config.user_header):
        raise ValueError(f"user header {config.user_header!r} is not a valid header name")
    if config.hash_balance_factor and config.hash_balance_factor <= 100:
        raise ValueError("hash_balance_factor must be 0 (off) or more than 100")
    if isinstance(servers, StaticServers) and not servers.servers and config.placement is None:
        raise ValueError("a static router needs at least one server")
    lines = [
        "# Rendered by the Saigon operator from the SaigonModel's spec.router; do not edit.",
        "global",
        f"    maxconn {config.maxconn}",
        # No `log` line: access logs would carry user ids (the hash key) and paths.
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        f"    timeout client {config.timeout_s}s",
        f"    timeout server {config.timeout_s}s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 30s",
        "    timeout check 2s",
        # A dead or draining replica costs a retry on another server, not a failed request.
        f"    retries {config.retries}",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "",
        *_resolvers(servers),
        "frontend health",
        f"    bind {config.bind_address}:{config.health_port}",
        "    http-request return status 200 content-type text/plain string ok if { path /healthz }",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request deny deny_status 404",
        "",
        "frontend saigon",
        f"    bind {config.bind_address}:{config.port}",
        # Kept for L7 retries: a request is replayed only if HAProxy still holds all of it.
        "    option http-buffer-request",
        f"    http-request set-var(txn.saigon_user) req.hdr({config.user_header})",
        *_owners_lookup(config),
        "    http-request set-var(txn.saigon_user) req.hdr(Authorization) if !{ var(txn.saigon_user) -m found }",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
    ]
    if config.affinity:
        lines += [
            # Same user, same replica (their adapter stays resident there); no key: round-robin.
            "    balance hash var(txn.saigon_user)",
            "    hash-type consistent sdbm avalanche",
        ]
        if config.hash_balance_factor:
            lines.append(f"    hash-balance-factor {config.hash_balance_factor}")
    else:
        lines.append("    balance roundrobin")
    lines += [
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        f"    http-response set-header {REPLICA_HEADER} %[srv_name]",
        f"    default-server check inter {config.check_interval_ms}ms fall 2 rise 2"
        " observe layer4 error-limit 1 on-error mark-down",
        *_use_owners(config, servers),
        *_servers(servers),
        "",
    ]
    return "\n".join(lines)


def _owners_lookup(config: RouterConfig) -> list[str]:
    if config.placement is None:
        return []
    header = config.user_header
    return [
        # The user's slot, as saigon_contract.placement.slot_of computes it, then its owners.
        f"    http-request set-var(txn.saigon_slot) req.hdr({header}),crc32,mod({placement.SLOTS})"
        f" if {{ req.hdr({header}) -m found }}",
        f"    http-request set-var(txn.saigon_owners) var(txn.saigon_slot),map_int({config.placement.map_path})"
        " if { var(txn.saigon_slot) -m found }",
    ]


def _use_owners(config: RouterConfig, servers: ServerSource) -> list[str]:
    if config.placement is None:
        return []
    if not isinstance(servers, StaticServers) or not config.affinity:
        raise ValueError("placement routing needs static servers named after their pods, and affinity")
    sep = placement.MAP_SEPARATOR
    return [
        f"    use-server {s.name} if {{ var(txn.saigon_owners),field({rank},{sep}) -m str {s.name} }}"
        f" {{ srv_is_up({BACKEND}/{s.name}) }}"
        for rank in range(1, config.placement.ranks + 1)
        for s in servers.servers
    ]


def _resolvers(servers: ServerSource) -> list[str]:
    if not isinstance(servers, DnsServers):
        return []
    return [
        "resolvers cluster",
        "    parse-resolv-conf",
        f"    hold valid {servers.hold_valid_s}s",
        "    hold obsolete 0s",
        "    accepted_payload_size 8192",
        "",
    ]


def _servers(servers: ServerSource) -> list[str]:
    if isinstance(servers, DnsServers):
        return [
            f"    server-template rt {servers.slots} {servers.fqdn}:{servers.port}"
            " resolvers cluster init-addr none resolve-prefer ipv4"
        ]
    if not servers.servers:
        return []  # placement only (render checks): every request answers 503 until a pod is ready
    return [f"    server {s.name} {s.host}:{s.port}" for s in servers.servers]
