"""Verify stage 3 where nodes will meet it: the objects in the cluster and each mirror URL's ``/v2/``.

Per endpoint: the docker Service exists with the expected port and target port; the docker Ingress routes
the endpoint's host to that Service port (and lists the host under tls when the chart renders tls);
``GET <mirror URL>/v2/`` through the ingress host answers 200 or 401 with a Bearer challenge whose realm is
on the same host (a realm on another host or port means X-Forwarded-* did not reach Nexus: nodes would be
sent somewhere they cannot reach); with https the certificate must verify for the host; and, when
``verification.images`` names an image of that registry, its manifest pulls through the ingress.
A new Ingress takes the controller a moment to route, so 404 (default backend), 502/503 and connection errors
are retried until ``helm.ready_timeout_s``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from runbook_lib import net
from runbook_lib.helm import render
from runbook_lib.helm.exposure import Objects, desired_objects
from runbook_lib.helm.release import Release
from runbook_lib.helm.values import Endpoint, Overlay
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Check, Plan
from runbook_lib.registry.client import Challenge, ImageRef, RegistryClient, RegistryError
from runbook_lib.secrets import SecretResolver

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


NOT_READY = (404, 502, 503, 504)


def _service_port(svc: dict[str, Any], port: int) -> dict[str, Any] | None:
    return next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port), None)


def check_objects(
    params: RunbookParams, api_client: ApiClient, release: Release, overlay: Overlay
) -> list[Check]:
    """The rendered docker objects exist with the expected ports, hosts and TLS."""
    store = Objects(api_client)
    checks = []
    for want in desired_objects(params, release, overlay):
        ns = render.namespace_of(want, release.namespace)
        name = want["metadata"]["name"]
        have = store.get(want["kind"], ns, name)
        label = f"{want['kind']} {ns}/{name}"
        if have is None:
            checks.append(Check(f"{label} exists", False, "not found"))
            continue
        if want["kind"] == "Service":
            wport = want["spec"]["ports"][0]
            hport = _service_port(have, wport["port"])
            target = wport.get("targetPort", wport["port"])
            ok = hport is not None and hport.get("targetPort", hport.get("port")) == target
            checks.append(
                Check(
                    f"{label} port {wport['port']} -> {target}",
                    ok,
                    f"ports {[(p.get('port'), p.get('targetPort')) for p in have['spec'].get('ports', [])]}",
                )
            )
            continue
        wrule = want["spec"]["rules"][0]
        wbackend = wrule["http"]["paths"][0]["backend"]["service"]
        routed = any(
            r.get("host") == wrule.get("host")
            and any(
                (p.get("backend") or {}).get("service") == wbackend
                for p in (r.get("http") or {}).get("paths") or []
            )
            for r in have["spec"].get("rules") or []
        )
        checks.append(
            Check(
                f"{label} routes {wrule.get('host')} -> {wbackend['name']}:{wbackend['port']['number']}",
                routed,
                f"rules {have['spec'].get('rules')}",
            )
        )
        for wtls in want["spec"].get("tls") or []:
            htls = have["spec"].get("tls") or []
            ok = any(
                set(wtls["hosts"]) <= set(t.get("hosts") or [])
                and t.get("secretName") == wtls.get("secretName")
                for t in htls
            )
            checks.append(
                Check(
                    f"{label} tls {','.join(wtls['hosts'])} ({wtls.get('secretName') or 'default cert'})",
                    ok,
                    f"tls {htls}",
                )
            )
    return checks


def _ping(params: RunbookParams, url: str, timeout_s: float) -> tuple[httpx.Response | None, str]:
    """GET <url>/v2/, retried while the ingress is not routing yet."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            with net.client(params.resolve, timeout=10) as http:
                resp = http.get(f"{url}/v2/")
            if resp.status_code not in NOT_READY:
                return resp, f"answered {resp.status_code}"
            last = f"answered {resp.status_code}"
        except httpx.ConnectError as err:
            if "CERTIFICATE" in str(err).upper() or "SSL" in str(err).upper():
                return None, f"TLS failed: {err}"
            last = f"cannot connect: {err}"
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() >= deadline:
            return None, f"{last} (waited {timeout_s:.0f} s for the ingress)"
        time.sleep(0.5)


def _authority(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or default}"


def check_endpoint(params: RunbookParams, ep: Endpoint, secret: SecretResolver | None) -> list[Check]:
    resp, detail = _ping(params, ep.url, params.helm.ready_timeout_s)
    checks = []
    if ep.tls:
        tls_ok = resp is not None or not detail.startswith("TLS failed")
        checks.append(Check(f"{ep.host}: TLS certificate valid", tls_ok and resp is not None, detail))
    if resp is None:
        checks.append(Check(f"{ep.host}: /v2/ answers through the ingress", False, f"{ep.url}/v2/ {detail}"))
        return checks
    challenge = Challenge.parse(resp.headers.get("www-authenticate"))
    bearer = resp.status_code == 401 and challenge is not None and challenge.scheme == "bearer"
    checks.append(
        Check(
            f"{ep.host}: /v2/ answers through the ingress",
            resp.status_code == 200 or bearer,
            f"{ep.url}/v2/ {detail}" + (f", {resp.headers.get('www-authenticate')}" if challenge else ""),
        )
    )
    if bearer:
        realm = challenge.params.get("realm", "")
        same = bool(realm) and _authority(realm) == _authority(ep.url)
        checks.append(
            Check(
                f"{ep.host}: token realm on the ingress host",
                same,
                f"realm {realm}"
                + (
                    ""
                    if same
                    else f", expected on {_authority(ep.url)}: does the ingress "
                    "pass X-Forwarded-Host/Proto/Port to Nexus?"
                ),
            )
        )
    image = next(
        (ImageRef.parse(i) for i in params.verification.images if ImageRef.parse(i).registry == ep.registry),
        None,
    )
    if image is not None:
        checks.append(_pull(params, ep, image, secret))
    return checks


def _pull(params: RunbookParams, ep: Endpoint, image: ImageRef, secret: SecretResolver | None) -> Check:
    sec = params.security
    user = password = None
    if sec.mode == "authenticated" and secret is not None and sec.pull_password:
        user, password = sec.user, secret(sec.pull_password, sec.user)
    try:
        with RegistryClient(
            ep.url, user, password, timeout=60, transport=net.transport(params.resolve)
        ) as reg:
            m = reg.manifest(image.repository, image.reference)
        detail = f"manifest {image.repository}:{image.reference} answered {m.status}" + (
            f" ({m.digest})" if m.digest else ""
        )
        return Check(f"{ep.host}: pull {image} through the ingress", m.status == 200, detail)
    except (RegistryError, httpx.HTTPError) as err:
        return Check(f"{ep.host}: pull {image} through the ingress", False, f"{type(err).__name__}: {err}")


def verify(
    params: RunbookParams,
    api_client: ApiClient,
    release: Release,
    overlay: Overlay,
    secret: SecretResolver | None = None,
) -> list[Check]:
    checks = check_objects(params, api_client, release, overlay)
    for ep in overlay.endpoints:
        checks += check_endpoint(params, ep, secret)
    return checks


def run_after(
    plan: Plan,
    params: RunbookParams,
    api_client: ApiClient,
    release: Release,
    overlay: Overlay,
    secret: SecretResolver | None = None,
) -> tuple[list[Check], str]:
    """Verify, unless this is a plan-mode run that still has changes to make (nothing to verify yet)."""
    if not plan.apply_mode and plan.pending:
        return [], (
            f"verification skipped: plan mode with {len(plan.pending)} pending change(s); rerun with --apply"
        )
    checks = verify(params, api_client, release, overlay, secret)
    failed = sum(not c.ok for c in checks)
    return checks, f"{len(checks)} check(s), {failed} failed"
