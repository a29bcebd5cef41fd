"""SigV4 signing, checked against the worked example in AWS's S3 documentation."""

from __future__ import annotations

from datetime import UTC, datetime

from saigon_agent import s3

# "Example: GET Object" in the S3 API reference (sig-v4-header-based-auth).
EXAMPLE = s3.Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EXAMPLE_TIME = datetime(2013, 5, 24, tzinfo=UTC)


def test_signature_matches_the_aws_example() -> None:
    headers = s3.sign(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        headers={"Range": "bytes=0-9"},
        region="us-east-1",
        creds=EXAMPLE,
        now=EXAMPLE_TIME,
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_signed_get_is_path_style_and_leaves_host_to_the_client() -> None:
    url, headers = s3.signed_get(
        "https://minio.storage.svc:9000", "adapters", "users/42/v1.tar", "eu-west-1", EXAMPLE, EXAMPLE_TIME
    )
    assert url == "https://minio.storage.svc:9000/adapters/users/42/v1.tar"
    assert "host" not in headers
    assert headers["x-amz-date"] == "20130524T000000Z"
    assert "/20130524/eu-west-1/s3/aws4_request" in headers["authorization"]
