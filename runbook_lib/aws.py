"""AWS clients from parameters (region, optional endpoint for stand-ins such as moto)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook_lib.params import RunbookParams


def client(params: RunbookParams, service: str) -> Any:
    import boto3
    from botocore.config import Config

    a = params.aws
    session = boto3.session.Session(profile_name=a.profile) if a.profile else boto3.session.Session()
    extra: dict[str, str] = {}
    if a.stand_in_credentials:
        # moto accepts any key; fixed values keep the lab free of environment set-up.
        extra = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return session.client(
        service,
        region_name=a.region,
        endpoint_url=a.endpoint_url,
        config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2}),
        **extra,
    )
