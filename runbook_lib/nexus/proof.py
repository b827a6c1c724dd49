"""After the security stage: prove the access model where clients meet it — the registry endpoint.

Anonymous mode: an anonymous client (no credentials) gets a manifest. Authenticated mode: an anonymous
client is refused, the pull user gets the manifest, and a wrong password is refused. Each endpoint is
tried at its mirror URL when that answers, otherwise through Nexus's main port
(``/repository/<name>/v2/...``), which exists as soon as the repository does.
"""

from __future__ import annotations

import httpx

from runbook_lib import net
from runbook_lib.nexus import security
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Check
from runbook_lib.registry.client import ImageRef, RegistryClient, RegistryError
from runbook_lib.secrets import SecretResolver

PROBE = "library/runbook-access-probe"  # asked for when no verification image names the upstream


def access_check(endpoint: str, url: str, who: str, expect: str, got: str, ok: bool) -> Check:
    """One line of the access model: `who` `expect` (can pull / is refused) at an endpoint, and what it
    got."""
    return Check(f"{endpoint}: {who} {expect}", ok, f"{url}: {got}")


def endpoint_url(params: RunbookParams, repo: str, mirror_url: str | None) -> str:
    if mirror_url:
        try:
            with net.client(params.resolve, timeout=5) as http:
                answered = http.get(f"{mirror_url}/v2/").status_code in (200, 401)
            if answered:
                return mirror_url
        except httpx.HTTPError:
            pass
    return f"{params.nexus.url}/repository/{repo}"


def _attempt(
    params: RunbookParams, url: str, image: ImageRef | None, user: str | None, password: str | None
) -> tuple[bool, str]:
    """True when the endpoint served (a manifest, or /v2/ when there is no image to ask for)."""
    try:
        with RegistryClient(url, user, password, timeout=30, transport=net.transport(params.resolve)) as reg:
            if image is None:
                resp = reg.ping()
                if resp.status_code != 200:
                    return False, f"/v2/ answered {resp.status_code}"
                # /v2/ takes an anonymous token whenever anonymous access is on (nexus-public#651); read
                # is granted per repository: a manifest request tells (404 = allowed, nothing there).
                m = reg.manifest(PROBE, "latest")
                return m.status in (200, 404), f"/v2/ answered 200, manifest {PROBE}:latest {m.status}"
            m = reg.manifest(image.repository, image.reference)
            return m.status == 200, f"manifest {image.repository}:{image.reference} answered {m.status}"
    except RegistryError as err:
        return False, str(err)
    except httpx.HTTPError as err:
        return False, f"{type(err).__name__}: {err}"


def prove(params: RunbookParams, secret: SecretResolver) -> list[Check]:
    sec = params.security
    images = [ImageRef.parse(i) for i in params.verification.images]
    checks: list[Check] = []
    done: set[str] = set()
    for up in params.upstreams:
        repo = up.endpoint_repository
        if repo in done:
            continue
        done.add(repo)
        image = next((i for i in images if i.registry == up.registry), None)
        url = endpoint_url(params, repo, up.mirror_url)
        served, got = _attempt(params, url, image, None, None)
        if sec.mode == "anonymous":
            checks.append(access_check(repo, url, "anonymous", "can pull", got, served))
            continue
        checks.append(access_check(repo, url, "anonymous", "is refused", got, not served))
        # during a rotation both pull users can pull; a retired one is refused (nexus.security.proof_users)
        for user, ref, can in security.proof_users(params):
            password = secret(ref, user)
            served, got = _attempt(params, url, image, user, password)
            expect = "can pull" if can else "is refused (retired)"
            checks.append(access_check(repo, url, f"user {user}", expect, got, served == can))
            if can:
                served, got = _attempt(params, url, image, user, password + "-wrong")
                checks.append(
                    access_check(
                        repo, url, f"user {user} with a wrong password", "is refused", got, not served
                    )
                )
    return checks


def credential_accepted(params: RunbookParams, url: str, user: str, password: str) -> tuple[bool, str]:
    """Can this user pull at the endpoint (/v2/ and a probe manifest)? With what the endpoint said."""
    return _attempt(params, url, None, user, password)
