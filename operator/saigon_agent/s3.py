"""AWS Signature Version 4 for one S3 GetObject (path-style, works with S3-compatible stores)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


def sign(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    region: str,
    creds: Credentials,
    now: datetime,
    service: str = "s3",
    payload_sha256: str = EMPTY_SHA256,
) -> dict[str, str]:
    """Returns the request headers (including Authorization) for a request with no query string."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    all_headers = {k.lower(): v.strip() for k, v in headers.items()}
    all_headers.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256})
    if creds.session_token:
        all_headers["x-amz-security-token"] = creds.session_token
    signed = sorted(all_headers)
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{name}:{all_headers[name]}\n" for name in signed),
            ";".join(signed),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return all_headers


def signed_get(
    endpoint: str, bucket: str, key: str, region: str, creds: Credentials, now: datetime | None = None
) -> tuple[str, dict[str, str]]:
    """URL and headers for GET <endpoint>/<bucket>/<key>; the caller must not follow redirects with them."""
    host = urlsplit(endpoint).netloc
    path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")
    headers = sign(
        method="GET", host=host, path=path, headers={}, region=region, creds=creds, now=now or datetime.now(UTC)
    )
    headers.pop("host")  # aiohttp sets it from the URL
    return endpoint.rstrip("/") + path, headers
