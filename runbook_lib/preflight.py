"""Stage 0, preflight: reach and version every configured endpoint before anything is changed.

Checks run concurrently with short timeouts so a dead endpoint costs seconds, not minutes. Each check
says what it reached, which version answered and how long it took; a required endpoint that is down
fails the stage, and the record names it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from runbook_lib import net
from runbook_lib.nexus.version import NexusVersion, parse_server_header
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Check
from runbook_lib.secrets import REDACTOR


@dataclass
class Probe:
    """One endpoint being probed (filled in by its probe); ``as_check`` gives the stage's Check."""

    name: str
    target: str
    required: bool
    ok: bool = False
    version: str = ""
    detail: str = ""
    latency_ms: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def full_detail(self) -> str:
        """The detail followed by the warnings, as the table and the check show them."""
        return "; ".join([self.detail, *self.warnings]).strip("; ")

    def as_check(self) -> Check:
        """ok (warn when there are warnings); down: fail when required, warn when optional."""
        detail = self.full_detail
        if self.ok:
            return Check.graded(self.name, "warn" if self.warnings else "ok", detail)
        if self.required:
            return Check.graded(self.name, "fail", detail)
        return Check.graded(self.name, "warn", f"unreachable (optional): {detail}")

    @property
    def status(self) -> str:
        if self.ok:
            return "warn" if self.warnings else "ok"
        return "FAIL" if self.required else "unreachable (optional)"


def _timed(check: Probe, probe: Callable[[Probe], None]) -> Probe:
    start = time.perf_counter()
    try:
        probe(check)
    except httpx.HTTPError as err:
        check.ok = False
        check.detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    except Exception as err:  # any failure of one probe is that check's result, not the stage's crash
        check.ok = False
        check.detail = f"{type(err).__name__}: {err}"
    check.latency_ms = round((time.perf_counter() - start) * 1000, 1)
    check.detail = REDACTOR.scrub(check.detail)
    return check


# ------------------------------------------------------------------------------------------- probes
def probe_nexus(params: RunbookParams) -> Callable[[Probe], None]:
    n = params.nexus

    def probe(check: Probe) -> None:
        with net.client(params.resolve, timeout=n.timeout_s) as http:
            resp = http.get(f"{n.url}/service/rest/v1/status")
            info = parse_server_header(resp.headers.get("server"))
            if info:
                check.version = f"{info.version} ({info.edition})"
            if resp.status_code != 200:
                check.detail = f"status endpoint answered {resp.status_code} (Nexus not ready to serve reads)"
                return
            writable = http.get(f"{n.url}/service/rest/v1/status/writable")
        check.ok = True
        check.detail = "serving reads" + (
            ", writable" if writable.status_code == 200 else ", READ-ONLY (frozen)"
        )
        if writable.status_code != 200:
            check.warnings.append("Nexus is read-only: stages that write will fail")
        if info is None:
            check.warnings.append("no Nexus Server header: is this URL Nexus (or a proxy hiding the header)?")
            return
        if n.expect_edition and info.edition != n.expect_edition:
            check.ok = False
            check.detail = f"edition {info.edition}, parameters expect {n.expect_edition}"
        if info.version < NexusVersion.parse(n.min_version):
            check.ok = False
            check.detail = f"version {info.version} is older than the required {n.min_version}"

    return probe


def probe_registry(url: str, overrides: dict[str, str] | None = None) -> Callable[[Probe], None]:
    """A Registry API v2 endpoint answers /v2/ with 200, or 401 plus an auth challenge."""

    def probe(check: Probe) -> None:
        with net.client(overrides, timeout=10.0) as http:
            resp = http.get(f"{url}/v2/")
        api = resp.headers.get("docker-distribution-api-version", "")
        challenge = resp.headers.get("www-authenticate", "")
        if resp.status_code in (200, 401):
            check.ok = True
            check.version = api or "registry API v2"
            scheme = challenge.split(" ", 1)[0] if challenge else "none"
            check.detail = f"/v2/ answered {resp.status_code}, auth challenge: {scheme}"
            if resp.status_code == 401 and not challenge:
                check.warnings.append("401 without WWW-Authenticate: clients cannot log in")
        else:
            check.detail = f"/v2/ answered {resp.status_code}: not a registry API endpoint"

    return probe


def probe_kubernetes(params: RunbookParams) -> Callable[[Probe], None]:
    def probe(check: Probe) -> None:
        from kubernetes import client

        from runbook_lib.kube import api_client

        with api_client(params) as api:
            api.configuration.retries = 0
            info = client.VersionApi(api).get_code(_request_timeout=10)
            check.target = api.configuration.host
        check.ok = True
        check.version = info.git_version
        check.detail = f"API server {info.git_version} ({info.platform})"

    return probe


def probe_aws(params: RunbookParams) -> Callable[[Probe], None]:
    def probe(check: Probe) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from runbook_lib import aws

        try:
            ident = aws.client(params, "sts").get_caller_identity()
            check.detail = f"account {ident['Account']}, {ident['Arn']}"
            check.ok = True
            if params.aws.cluster_name:
                cluster = aws.client(params, "eks").describe_cluster(name=params.aws.cluster_name)["cluster"]
                check.version = f"EKS {cluster.get('version', '?')}"
                check.detail += f"; cluster {params.aws.cluster_name} {cluster.get('status', '?')}"
        except ClientError as err:
            check.ok = False
            check.detail = f"{err.response['Error'].get('Code')}: {err.response['Error'].get('Message', '')}"
        except BotoCoreError as err:
            check.ok = False
            check.detail = f"{type(err).__name__}: {err}"

    return probe


# ------------------------------------------------------------------------------------------- report
@dataclass
class PreflightReport:
    checks: list[Probe]

    @property
    def failed(self) -> list[Probe]:
        return [c for c in self.checks if c.required and not c.ok]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "check": c.name,
                "target": c.target,
                "status": c.status,
                "version": c.version,
                "latency_ms": c.latency_ms,
                "detail": c.full_detail,
            }
            for c in self.checks
        ]

    def table(self):
        from runbook_lib.display import styled

        return styled(self.rows(), "status")

    def results(self) -> dict[str, Any]:
        return {
            "endpoints": {
                c.name: {"ok": c.ok, "version": c.version, "latency_ms": c.latency_ms, "required": c.required}
                for c in self.checks
            },
            "failed": [c.name for c in self.failed],
        }

    def check_records(self) -> list[dict[str, Any]]:
        return [{**c.as_check().record(), "required": c.required} for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks]}


def plan_checks(params: RunbookParams) -> list[tuple[Probe, Callable[[Probe], None]]]:
    checks: list[tuple[Probe, Callable[[Probe], None]]] = [
        (Probe("nexus", params.nexus.url, True), probe_nexus(params))
    ]
    for up in params.upstreams:
        checks.append(
            (
                Probe(f"upstream {up.registry}", up.remote_url, True),
                probe_registry(up.remote_url, params.resolve),
            )
        )
    for up in params.upstreams:
        if up.mirror_url:
            # Optional: the mirror endpoints appear only once the Nexus and Helm stages have run.
            checks.append(
                (
                    Probe(f"mirror {up.registry}", up.mirror_url, False),
                    probe_registry(up.mirror_url, params.resolve),
                )
            )
    k = params.kubernetes
    kube_target = k.api_host or (
        "in-cluster" if k.in_cluster else str(params.path(k.kubeconfig) or "~/.kube/config")
    )
    checks.append((Probe("kubernetes", kube_target, k.required), probe_kubernetes(params)))
    aws_target = params.aws.endpoint_url or f"AWS {params.aws.region}"
    checks.append((Probe("aws", aws_target, params.aws.required), probe_aws(params)))
    return checks


def run(params: RunbookParams, workers: int = 8) -> PreflightReport:
    pairs = plan_checks(params)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda pair: _timed(*pair), pairs))
    return PreflightReport(done)
