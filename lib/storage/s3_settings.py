"""What it takes to reach one S3 bucket; kept apart from ``lib.storage.s3`` so that config can build it without boto3."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to reach one bucket. Secrets are excluded from repr."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None  # AWS_SESSION_TOKEN of temporary credentials
    force_path_style: bool | None = None
    skip_verify: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    # At least a restore's download threads (lib.storage.pool: 8 + SMALL_WORKERS): urllib3 closes the extra
    # connections of a full pool, so every later request would open a new one (a TLS handshake).
    max_pool_connections: int = 64
    # SSE-C (Litestream's sse-customer-key): every GET must send the key, or S3 refuses it.
    sse_customer_algorithm: str | None = None
    sse_customer_key: bytes | None = None  # the 32 raw key bytes; botocore sends them base64 with the MD5

    def __repr__(self) -> str:  # never print the secret key
        return f"S3Settings(bucket={self.bucket!r}, endpoint={self.endpoint!r}, region={self.region!r})"
