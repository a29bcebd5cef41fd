"""kopf's connections to the API server, bounded.

kopf's own session opens a connection per concurrent request without limit: with hundreds of
workers patching finalizers at once that is hundreds of TLS connections, each with its buffers
here and a connection's state in the API server. The operator logs in with a session of its own
(kopf's documented AiohttpSession), whose pool is bounded; requests beyond it wait for a connection.
"""

from __future__ import annotations

import aiohttp
import kopf

CONNECTIONS = 48  # kopf's requests and watches at once (SaigonModels); the operator's own client has 32 more


def bounded_session(info: kopf.ConnectionInfo, limit: int = CONNECTIONS) -> kopf.AiohttpSession:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
    )
