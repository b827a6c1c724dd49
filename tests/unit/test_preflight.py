"""Preflight (stage 0): each probe's verdict on what an endpoint answers, and how the report names failures.

Endpoints are real HTTP servers on 127.0.0.1 (ephemeral ports), the Kubernetes API stand-in and moto.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from runbook_lib import params as params_mod
from runbook_lib import preflight
from runbook_lib.plan import StageFailed
from runbook_lib.preflight import PreflightReport, Probe
from runbook_lib.secrets import Redactor
from runbook_lib.stages import preflight as preflight_stage
from tests.support.recording import RecordingContext

Routes = dict[str, tuple[int, dict[str, str]]]


class Endpoint:
    """A loopback HTTP server answering GETs from a mutable path -> (status, headers) table."""

    def __init__(self) -> None:
        self.routes: Routes = {}
        self.seen: list[str] = []
        routes, seen = self.routes, self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                status, headers = routes.get(self.path, (404, {}))
                body = b"{}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def version_string(self) -> str:
                # http.server's default Server header would otherwise be sent; routes may set their own
                return ""

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def make_params(
    nexus_url: str = "http://127.0.0.1:1", upstreams: list[dict] | None = None, **sections: Any
) -> params_mod.RunbookParams:
    data: dict[str, Any] = {
        "target": "unit",
        "nexus": {
            "url": nexus_url,
            "admin_password": "env:NEXUS_PW",
            "min_version": "3.77.0",
            "timeout_s": 2,
        },
        "upstreams": upstreams
        or [{"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:1"}],
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return params_mod.parse(data)


NEXUS_HEADER = {"Server": "Nexus/3.80.0-06 (COMMUNITY)"}


def nexus_check(params: params_mod.RunbookParams) -> Probe:
    return preflight._timed(Probe("nexus", params.nexus.url, True), preflight.probe_nexus(params))


# ------------------------------------------------------------------------------------------ Check
@pytest.mark.parametrize(
    ("ok", "warnings", "required", "status"),
    [
        (True, [], True, "ok"),
        (True, ["w"], True, "warn"),
        (False, [], True, "FAIL"),
        (False, [], False, "unreachable (optional)"),
        (True, [], False, "ok"),
        (False, ["w"], True, "FAIL"),
    ],
)
def test_check_status_reflects_ok_warnings_and_required(
    ok: bool, warnings: list[str], required: bool, status: str
) -> None:
    """ok with warnings is 'warn'; a down endpoint is FAIL only when it is required."""
    assert Probe("x", "t", required, ok=ok, warnings=list(warnings)).status == status


def test_timed_turns_exceptions_into_failed_check_with_latency() -> None:
    """A probe that raises yields a failed check naming the error type and message, never a crash."""

    def boom(check: Probe) -> None:
        time.sleep(0.02)
        check.ok = True
        raise ValueError("bad answer")

    c = preflight._timed(Probe("x", "t", True), boom)
    assert (c.ok, c.detail) == (False, "ValueError: bad answer")
    assert c.latency_ms is not None and c.latency_ms >= 20


def test_timed_names_httpx_error_without_message_by_type() -> None:
    """An httpx error with an empty message is reported by its type alone, not 'Type: '."""

    def probe(check: Probe) -> None:
        raise httpx.ReadTimeout("")

    assert preflight._timed(Probe("x", "t", True), probe).detail == "ReadTimeout"


def test_timed_scrubs_secrets_from_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret echoed in an error message does not reach the check's detail."""
    redactor = Redactor()
    redactor.add("s3cr3t-value")
    monkeypatch.setattr(preflight, "REDACTOR", redactor)

    def probe(check: Probe) -> None:
        raise RuntimeError("login with s3cr3t-value refused")

    detail = preflight._timed(Probe("x", "t", True), probe).detail
    assert "s3cr3t-value" not in detail and detail.startswith("RuntimeError: login with ")


# ------------------------------------------------------------------------------------------ Nexus
def test_nexus_ready_and_writable_is_ok_with_version(endpoint: Endpoint) -> None:
    """200 on status and status/writable with a Server header: ok, version and edition from the header."""
    endpoint.routes.update(
        {
            "/service/rest/v1/status": (200, NEXUS_HEADER),
            "/service/rest/v1/status/writable": (200, NEXUS_HEADER),
        }
    )
    c = nexus_check(make_params(endpoint.url + "/"))
    assert (c.ok, c.status, c.version, c.detail) == (
        True,
        "ok",
        "3.80.0-06 (COMMUNITY)",
        "serving reads, writable",
    )
    assert endpoint.seen == ["/service/rest/v1/status", "/service/rest/v1/status/writable"]


def test_nexus_read_only_is_ok_with_warning(endpoint: Endpoint) -> None:
    """A frozen Nexus still serves reads: ok, but warned about and shown as READ-ONLY."""
    endpoint.routes.update(
        {
            "/service/rest/v1/status": (200, NEXUS_HEADER),
            "/service/rest/v1/status/writable": (503, NEXUS_HEADER),
        }
    )
    c = nexus_check(make_params(endpoint.url))
    assert c.ok and c.status == "warn"
    assert c.detail == "serving reads, READ-ONLY (frozen)"
    assert any("read-only" in w for w in c.warnings)


def test_nexus_not_ready_fails_and_skips_writable(endpoint: Endpoint) -> None:
    """A non-200 status endpoint fails the check, says the code, and asks nothing further."""
    endpoint.routes["/service/rest/v1/status"] = (503, NEXUS_HEADER)
    c = nexus_check(make_params(endpoint.url))
    assert not c.ok and "503" in c.detail and c.version == "3.80.0-06 (COMMUNITY)"
    assert endpoint.seen == ["/service/rest/v1/status"]


def test_nexus_without_server_header_warns(endpoint: Endpoint) -> None:
    """No Nexus Server header: reachable, but the operator is asked whether this is Nexus at all."""
    endpoint.routes.update(
        {"/service/rest/v1/status": (200, {}), "/service/rest/v1/status/writable": (200, {})}
    )
    c = nexus_check(make_params(endpoint.url))
    assert c.ok and c.version == "" and c.status == "warn"
    assert any("Server header" in w for w in c.warnings)


def test_nexus_older_than_min_version_fails(endpoint: Endpoint) -> None:
    """A version below nexus.min_version fails with both versions named."""
    old = {"Server": "Nexus/3.42.0-01 (OSS)"}
    endpoint.routes.update(
        {"/service/rest/v1/status": (200, old), "/service/rest/v1/status/writable": (200, old)}
    )
    c = nexus_check(make_params(endpoint.url))
    assert not c.ok
    assert "3.42.0-01" in c.detail and "3.77.0" in c.detail


def test_nexus_min_version_boundary_is_inclusive(endpoint: Endpoint) -> None:
    """Exactly the minimum version (with a build suffix) passes."""
    hdr = {"Server": "Nexus/3.77.0-01 (COMMUNITY)"}
    endpoint.routes.update(
        {"/service/rest/v1/status": (200, hdr), "/service/rest/v1/status/writable": (200, hdr)}
    )
    assert nexus_check(make_params(endpoint.url)).ok


def test_nexus_unexpected_edition_fails(endpoint: Endpoint) -> None:
    """expect_edition PRO against a COMMUNITY server fails and names both editions."""
    endpoint.routes.update(
        {
            "/service/rest/v1/status": (200, NEXUS_HEADER),
            "/service/rest/v1/status/writable": (200, NEXUS_HEADER),
        }
    )
    c = nexus_check(make_params(endpoint.url, nexus={"expect_edition": "PRO"}))
    assert not c.ok and "COMMUNITY" in c.detail and "PRO" in c.detail


def test_nexus_down_is_a_failed_check_naming_the_connect_error() -> None:
    """A refused connection is reported as ConnectError in the detail, quickly."""
    start = time.perf_counter()
    c = nexus_check(make_params(closed_port_url()))
    assert not c.ok and c.status == "FAIL" and c.detail.startswith("ConnectError")
    assert time.perf_counter() - start < 3


# --------------------------------------------------------------------------------------- registry
def registry_check(url: str, overrides: dict[str, str] | None = None) -> Probe:
    return preflight._timed(Probe("r", url, True), preflight.probe_registry(url, overrides))


def test_registry_200_is_ok_with_api_version(endpoint: Endpoint) -> None:
    """/v2/ 200 with the distribution header: ok, version from the header, no auth challenge."""
    endpoint.routes["/v2/"] = (200, {"Docker-Distribution-API-Version": "registry/2.0"})
    c = registry_check(endpoint.url)
    assert (c.ok, c.version, c.detail, c.warnings) == (
        True,
        "registry/2.0",
        "/v2/ answered 200, auth challenge: none",
        [],
    )


def test_registry_401_names_the_challenge_scheme(endpoint: Endpoint) -> None:
    """401 with a Bearer challenge is a healthy registry; the scheme is reported, the version defaults."""
    endpoint.routes["/v2/"] = (401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1/token",service="x"'})
    c = registry_check(endpoint.url)
    assert c.ok and c.version == "registry API v2" and c.detail.endswith("auth challenge: Bearer")
    assert c.status == "ok"


def test_registry_401_without_challenge_warns(endpoint: Endpoint) -> None:
    """401 without WWW-Authenticate: reachable, but clients cannot log in, so it warns."""
    endpoint.routes["/v2/"] = (401, {})
    c = registry_check(endpoint.url)
    assert c.ok and c.status == "warn" and "WWW-Authenticate" in c.warnings[0]


def test_registry_other_status_is_not_a_registry(endpoint: Endpoint) -> None:
    """Anything but 200/401 on /v2/ (e.g. a web server's 404) fails the check."""
    c = registry_check(endpoint.url)  # no route: 404
    assert not c.ok and c.detail == "/v2/ answered 404: not a registry API endpoint"


def test_registry_probe_honours_resolve_overrides(endpoint: Endpoint) -> None:
    """A mirror host without DNS is reached through the `resolve:` address, like curl --resolve."""
    endpoint.routes["/v2/"] = (200, {})
    port = endpoint.url.rsplit(":", 1)[1]
    c = registry_check(f"http://mirror.unit.invalid:{port}", {"mirror.unit.invalid": "127.0.0.1"})
    assert c.ok, c.detail


# ----------------------------------------------------------------------------------- Kubernetes
def test_kubernetes_probe_reports_stand_in_version(kube, kubeconfig) -> None:
    """The probe reports the API server's gitVersion and platform and the host it reached."""
    p = make_params(kubernetes={"kubeconfig": str(kubeconfig)})
    c = preflight._timed(Probe("kubernetes", "?", True), preflight.probe_kubernetes(p))
    info = kube.version_info
    assert c.ok, c.detail
    assert c.version == info["gitVersion"]
    assert c.detail == f"API server {info['gitVersion']} ({info['platform']})"
    assert c.target == kube.url


def test_kubernetes_probe_down_fails(tmp_path) -> None:
    """An API server that refuses connections fails the check instead of raising."""
    from runbook_lab.kube import write_kubeconfig

    path = write_kubeconfig(tmp_path / "kc", closed_port_url())
    p = make_params(kubernetes={"kubeconfig": str(path)})
    c = preflight._timed(Probe("kubernetes", "?", True), preflight.probe_kubernetes(p))
    assert not c.ok and c.detail and c.status == "FAIL"


# ---------------------------------------------------------------------------------------- AWS
@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_aws_probe_reports_account_and_cluster(aws_env: None) -> None:
    """STS identity and the EKS cluster's version and status come from the (moto) API."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        eks = boto3.client("eks", region_name="us-east-1")
        eks.create_cluster(
            name="lab", version="1.31", roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={}
        )
        ident = boto3.client("sts", region_name="us-east-1").get_caller_identity()
        status = eks.describe_cluster(name="lab")["cluster"]["status"]
        p = make_params(aws={"cluster_name": "lab"})
        c = preflight._timed(Probe("aws", "AWS", True), preflight.probe_aws(p))
    assert c.ok, c.detail
    assert c.version == "EKS 1.31"
    assert c.detail == f"account {ident['Account']}, {ident['Arn']}; cluster lab {status}"


def test_aws_probe_missing_cluster_fails_with_error_code(aws_env: None) -> None:
    """A cluster that does not exist fails the check with the AWS error code, even though STS answered."""
    from moto import mock_aws

    with mock_aws():
        c = preflight._timed(
            Probe("aws", "AWS", True), preflight.probe_aws(make_params(aws={"cluster_name": "nope"}))
        )
    assert not c.ok
    assert c.detail.startswith("ResourceNotFoundException: ")


def test_aws_probe_unknown_profile_is_a_failed_check(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A profile missing from the AWS config is a failed check (botocore error), not a crash."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    c = preflight._timed(
        Probe("aws", "AWS", True), preflight.probe_aws(make_params(aws={"profile": "ghost"}))
    )
    assert not c.ok and c.detail.startswith("ProfileNotFound") and "ghost" in c.detail


# ------------------------------------------------------------------------------------- planning
def test_plan_checks_lists_every_endpoint_with_required_flags(tmp_path) -> None:
    """Nexus, each upstream (required), each mirror (optional), Kubernetes and AWS, in that order."""
    p = make_params(
        upstreams=[
            {
                "name": "docker-hub",
                "registry": "docker.io",
                "remote_url": "http://127.0.0.1:2",
                "mirror_url": "http://docker.mirror.invalid:8",
            },
            {"name": "quay-io", "registry": "quay.io", "remote_url": "http://127.0.0.1:3"},
        ],
        kubernetes={"api_host": "http://127.0.0.1:4", "required": False},
        aws={"region": "eu-west-1", "required": False},
    )
    checks = [c for c, _ in preflight.plan_checks(p)]
    assert [(c.name, c.target, c.required) for c in checks] == [
        ("nexus", "http://127.0.0.1:1", True),
        ("upstream docker.io", "http://127.0.0.1:2", True),
        ("upstream quay.io", "http://127.0.0.1:3", True),
        ("mirror docker.io", "http://docker.mirror.invalid:8", False),
        ("kubernetes", "http://127.0.0.1:4", False),
        ("aws", "AWS eu-west-1", False),
    ]


def test_plan_checks_targets_for_kubeconfig_in_cluster_and_aws_endpoint(tmp_path) -> None:
    """The Kubernetes target is the resolved kubeconfig path or 'in-cluster'; AWS names its endpoint."""
    p = params_mod.parse(
        {
            "target": "u",
            "nexus": {"url": "http://127.0.0.1:1", "admin_password": "env:X"},
            "upstreams": [{"name": "a", "registry": "docker.io", "remote_url": "http://127.0.0.1:2"}],
            "kubernetes": {"kubeconfig": "kc/config"},
            "aws": {"endpoint_url": "http://127.0.0.1:5"},
        },
        base_dir=tmp_path,
    )
    by_name = {c.name: c for c, _ in preflight.plan_checks(p)}
    assert by_name["kubernetes"].target == str((tmp_path / "kc" / "config").resolve())
    assert by_name["aws"].target == "http://127.0.0.1:5"
    p2 = make_params(kubernetes={"in_cluster": True})
    assert {c.name: c for c, _ in preflight.plan_checks(p2)}["kubernetes"].target == "in-cluster"


# -------------------------------------------------------------------------------------- report
def sample_report() -> PreflightReport:
    return PreflightReport(
        [
            Probe(
                "nexus",
                "n",
                True,
                ok=True,
                version="3.80.0",
                detail="serving reads",
                latency_ms=1.0,
                warnings=["w1"],
            ),
            Probe("upstream docker.io", "u", True, ok=False, detail="ConnectError: refused", latency_ms=2.0),
            Probe("mirror docker.io", "m", False, ok=False, detail="ConnectError: refused", latency_ms=3.0),
            Probe("aws", "a", True, ok=False, detail="", latency_ms=4.0, warnings=["only a warning"]),
        ]
    )


def test_report_failed_counts_required_only() -> None:
    """An optional endpoint that is down is not a failure; required ones are."""
    assert [c.name for c in sample_report().failed] == ["upstream docker.io", "aws"]


def test_report_rows_join_detail_and_warnings() -> None:
    """Each row has the status word; detail and warnings are joined, no stray separator when detail is
    empty."""
    rows = sample_report().rows()
    assert [r["status"] for r in rows] == ["warn", "FAIL", "unreachable (optional)", "FAIL"]
    assert rows[0]["detail"] == "serving reads; w1"
    assert rows[1]["detail"] == "ConnectError: refused"
    assert rows[3]["detail"] == "only a warning"
    assert set(rows[0]) == {"check", "target", "status", "version", "latency_ms", "detail"}


def run_checks(ctx: RecordingContext, report: PreflightReport) -> None:
    checks = preflight_stage.checks(ctx, report, preflight_stage.plan(ctx, report))
    preflight_stage.enforce(ctx, checks)


def test_stage_checks_store_checks_and_enforce_names_failures() -> None:
    """The stage's checks store checks and results; enforce fails the stage naming each required endpoint
    and why."""
    ctx = RecordingContext()
    with pytest.raises(StageFailed) as info:
        run_checks(ctx, sample_report())
    msg = str(info.value)
    assert "upstream docker.io (ConnectError: refused)" in msg and "aws (only a warning)" in msg
    assert "mirror docker.io" not in msg
    assert ctx.records["results"]["failed"] == ["upstream docker.io", "aws"]
    assert ctx.records["results"]["endpoints"]["mirror docker.io"] == {
        "ok": False,
        "version": "",
        "latency_ms": 3.0,
        "required": False,
    }
    assert ctx.records["failure"]["step"] == "preflight checks"
    assert ctx.records["failure"]["message"] == msg
    assert [r["name"] for r in ctx.records["checks"]] == [c.name for c in sample_report().checks]


def test_stage_passes_when_only_optional_endpoints_are_down() -> None:
    """No required failure: checks and results are recorded, no failure, no exception."""
    report = PreflightReport([Probe("nexus", "n", True, ok=True), Probe("mirror x", "m", False)])
    ctx = RecordingContext()
    run_checks(ctx, report)
    assert set(ctx.records) == {"checks", "results"} and ctx.records["results"]["failed"] == []


def test_report_as_dict_round_trips_fields() -> None:
    """as_dict carries every field of every check (for the run record)."""
    d = sample_report().as_dict()
    assert d["checks"][0]["warnings"] == ["w1"] and d["checks"][1]["required"] is True


# --------------------------------------------------------------------------------------- run()
def test_run_checks_concurrently_and_reports_each_endpoint(endpoint: Endpoint, kube, kubeconfig) -> None:
    """A full run against loopback endpoints: healthy ones ok, the dead upstream FAIL, dead mirror
    optional."""
    endpoint.routes.update(
        {
            "/service/rest/v1/status": (200, NEXUS_HEADER),
            "/service/rest/v1/status/writable": (200, NEXUS_HEADER),
            "/v2/": (401, {"WWW-Authenticate": "Basic realm=x"}),
        }
    )
    dead = closed_port_url()
    p = make_params(
        endpoint.url,
        upstreams=[
            {"name": "docker-hub", "registry": "docker.io", "remote_url": endpoint.url, "mirror_url": dead},
            {"name": "quay-io", "registry": "quay.io", "remote_url": dead},
        ],
        kubernetes={"kubeconfig": str(kubeconfig)},
        aws={"required": False, "endpoint_url": dead, "stand_in_credentials": True},
    )
    start = time.perf_counter()
    report = preflight.run(p)
    assert time.perf_counter() - start < 8
    status = {c.name: c.status for c in report.checks}
    assert status == {
        "nexus": "ok",
        "upstream docker.io": "ok",
        "upstream quay.io": "FAIL",
        "mirror docker.io": "unreachable (optional)",
        "kubernetes": "ok",
        "aws": "unreachable (optional)",
    }
    assert [c.name for c in report.failed] == ["upstream quay.io"]
    assert all(c.latency_ms is not None for c in report.checks)
