"""AWS clients from parameters: region, endpoint override, stand-in credentials, profiles, timeouts.

Calls go to moto (in process) or to a tiny STS-shaped HTTP server on 127.0.0.1 that records what it got.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from runbook_lib import aws
from runbook_lib import params as params_mod

STS_REPLY = b"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/loop</Arn><UserId>AIDLOOP</UserId>
  <Account>111122223333</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"""


def make_params(**aws_section: Any) -> params_mod.RunbookParams:
    return params_mod.parse(
        {
            "target": "unit",
            "nexus": {"url": "http://127.0.0.1:1", "admin_password": "env:NEXUS_PW"},
            "upstreams": [
                {"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:1"}
            ],
            "aws": aws_section,
        }
    )


@pytest.fixture(autouse=True)
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or profile from the machine: each test sets what it means to use."""
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class Sts:
    """An STS-shaped endpoint on loopback: answers GetCallerIdentity, records Authorization headers."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                seen.append(self.headers.get("Authorization", ""))
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(STS_REPLY)))
                self.end_headers()
                self.wfile.write(STS_REPLY)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def credential_scope(self) -> tuple[str, str, str]:
        """(access key, region, service) of the last SigV4 signature."""
        m = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request", self.authorizations[-1])
        assert m, self.authorizations[-1]
        return m[1], m[2], m[3]


@pytest.fixture
def sts() -> Iterator[Sts]:
    s = Sts()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_endpoint_region_and_stand_in_credentials_are_used(sts: Sts) -> None:
    """endpoint_url receives the call, signed for the configured region with the fixed stand-in key."""
    c = aws.client(make_params(region="eu-central-1", endpoint_url=sts.url, stand_in_credentials=True), "sts")
    ident = c.get_caller_identity()
    assert ident["Account"] == "111122223333"
    assert sts.credential_scope() == ("testing", "eu-central-1", "sts")
    assert c.meta.region_name == "eu-central-1" and c.meta.endpoint_url == sts.url


def test_stand_in_credentials_win_over_environment(sts: Sts, monkeypatch: pytest.MonkeyPatch) -> None:
    """With stand_in_credentials the environment's keys are not sent (they may be real ones)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    aws.client(make_params(endpoint_url=sts.url, stand_in_credentials=True), "sts").get_caller_identity()
    assert sts.credential_scope()[0] == "testing"


def test_default_chain_uses_environment_credentials(sts: Sts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without stand_in_credentials or a profile, the standard chain (here: environment) signs."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    aws.client(make_params(endpoint_url=sts.url), "sts").get_caller_identity()
    assert sts.credential_scope() == ("AKIAENVIRONMENT", "us-east-1", "sts")


def test_profile_selects_that_profiles_credentials(
    sts: Sts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aws.profile picks the named profile's keys over the environment's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    (tmp_path / "aws-credentials").write_text(
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = y\n"
        "[ops]\naws_access_key_id = AKIAOPSPROFILE\naws_secret_access_key = z\n"
    )
    aws.client(make_params(endpoint_url=sts.url, profile="ops"), "sts").get_caller_identity()
    assert sts.credential_scope()[0] == "AKIAOPSPROFILE"


def test_unknown_profile_raises_profile_not_found() -> None:
    """A profile absent from the AWS files is botocore's ProfileNotFound, naming the profile."""
    from botocore.exceptions import ProfileNotFound

    with pytest.raises(ProfileNotFound, match="ghost"):
        aws.client(make_params(profile="ghost"), "sts")


def test_timeouts_and_retries_are_short() -> None:
    """Clients fail fast: 5 s connect, 15 s read, 2 retries (no minutes-long hangs).

    botocore's `max_attempts` counts retries after the first try and is kept as total_max_attempts = 1 + 2.
    """
    cfg = aws.client(make_params(stand_in_credentials=True), "eks").meta.config
    assert (cfg.connect_timeout, cfg.read_timeout) == (5, 15)
    assert cfg.retries["total_max_attempts"] == 3


def test_client_talks_to_moto_for_the_requested_service() -> None:
    """The service argument picks the API: EKS and STS calls answered by moto."""
    with mock_aws():
        p = make_params(region="us-west-2", stand_in_credentials=True)
        eks = aws.client(p, "eks")
        assert eks.meta.service_model.service_name == "eks"
        eks.create_cluster(name="c1", roleArn="arn:aws:iam::123456789012:role/r", resourcesVpcConfig={})
        assert eks.list_clusters()["clusters"] == ["c1"]
        arn = eks.describe_cluster(name="c1")["cluster"]["arn"]
        assert arn.startswith("arn:aws:eks:us-west-2:")
        ident = aws.client(p, "sts").get_caller_identity()
        assert arn.split(":")[4] == ident["Account"]
