"""Stage 1: one docker proxy per upstream and one endpoint per upstream.

Why one endpoint per upstream: containerd tells a mirror which registry an image belongs to only
through the ``?ns=`` query parameter, and Nexus ignores it. A single group holding every upstream's
proxy would answer ``gcr.io/x/y`` by asking its members in order — Docker Hub first — and could serve
the wrong image. So docker.io gets the seed's group (``docker``, connector 8082) and every other upstream
its own connector port (on its proxy, or on a group of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from runbook_lib import net
from runbook_lib.nexus.client import NexusClient
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.plan import Change, Check, Plan, StageFailed
from runbook_lib.secrets import SecretResolver

HUB_INDEX_URL = "https://index.docker.io/"  # what the Nexus UI sends for "Use Docker Hub"
SECRET_KEYS = ("password", "bearerToken")


def docker_block(params: RunbookParams, port: int | None) -> dict[str, Any]:
    # forceBasicAuth=false is the UI's "Allow anonymous docker pull (Docker Bearer Token Realm
    # required)". Bearer tokens also carry authenticated users, so both modes keep it false; whether
    # anonymous pulls work is decided by anonymous access and the anonymous user's privileges.
    # Unset ports are omitted, not null: the published schema has no null for them.
    block: dict[str, Any] = {"v1Enabled": False, "forceBasicAuth": False}
    if port is not None:
        block["httpPort"] = port
    return block


def proxy_document(params: RunbookParams, up: Upstream, password: str | None) -> dict[str, Any]:
    http_client: dict[str, Any] = {"blocked": False, "autoBlock": True}
    if up.credentials:
        # Omitted (not null) without credentials: the published schema has no null for it.
        http_client["authentication"] = {
            "type": "username",
            "username": up.credentials.username,
            "password": password,
        }
    index_url = up.index_url or (HUB_INDEX_URL if up.index_type == "HUB" else None)
    return {
        "name": up.name,
        "online": True,
        "storage": {"blobStoreName": params.nexus.blob_store, "strictContentTypeValidation": True},
        "proxy": {
            "remoteUrl": up.remote_url,
            "contentMaxAge": up.content_max_age,
            "metadataMaxAge": up.metadata_max_age,
        },
        "negativeCache": {"enabled": up.negative_cache, "timeToLive": up.negative_cache_ttl},
        "httpClient": http_client,
        # The connector sits on the group when there is one, else on the proxy itself.
        "docker": docker_block(params, None if up.group else up.connector_port),
        # Never indexUrl "" (rejected, TPN#60); omitted when there is none.
        "dockerProxy": {"indexType": up.index_type, **({"indexUrl": index_url} if index_url else {})},
    }


def group_document(params: RunbookParams, up: Upstream, actual: dict | None) -> dict[str, Any]:
    members = list((actual or {}).get("group", {}).get("memberNames") or [])
    # Members someone else added stay, except the proxies of the other upstreams: with them the group
    # would answer their paths too (containerd's ?ns= is ignored, see the module docstring).
    members = [m for m in members if m not in _other_proxies(params, up)]
    if up.name not in members:
        members = [up.name, *members]  # ours first; members someone else added stay
    return {
        "name": up.group,
        "online": True,
        "storage": {"blobStoreName": params.nexus.blob_store, "strictContentTypeValidation": True},
        "group": {"memberNames": members},
        "docker": docker_block(params, up.connector_port),
    }


def _other_proxies(params: RunbookParams, up: Upstream) -> dict[str, str]:
    """The proxies (name -> registry) of the upstreams other than `up`'s registry."""
    return {u.name: u.registry for u in params.upstreams if u.registry != up.registry}


def _without_secrets(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_secrets(v) for k, v in doc.items() if k not in SECRET_KEYS}
    return doc


def _compare(
    plan: Plan,
    kind: str,
    name: str,
    actual: dict | None,
    desired: dict,
    write_create: Callable[[], Any],
    write_update: Callable[[], Any],
    has_secret: bool,
) -> Change:
    """Compare without the write-only secrets (Nexus never returns them), note that they were not compared."""
    note = (
        "upstream password not compared (Nexus never returns it); sent on create or with another change"
        if has_secret
        else ""
    )
    if actual is not None:
        actual = _ensure_blobstore_unchanged(actual, desired, name)
    view = _without_secrets(desired) if actual is not None else desired
    stale_auth = actual is not None and (actual.get("httpClient") or {}).get("authentication")
    if stale_auth and "httpClient" in desired and "authentication" not in desired["httpClient"]:
        # Credentials taken out of the parameters: the proxy must drop them too (the update body omits
        # them), not go on authenticating upstream with the old ones while the plan says "unchanged".
        view = {**view, "httpClient": {**view["httpClient"], "authentication": None}}
    return plan.compare(
        kind,
        name,
        actual,
        view,
        create=write_create,
        update=write_update,
        secret_keys=SECRET_KEYS,
        note=note,
    )


def _ensure_blobstore_unchanged(actual: dict, desired: dict, name: str) -> dict:
    have = (actual.get("storage") or {}).get("blobStoreName")
    want = desired["storage"]["blobStoreName"]
    if have and have != want:
        # Nexus 3.68+ refuses to change a repository's blob store through the API.
        raise StageFailed(
            f"repository {name} uses blob store {have!r}, parameters say {want!r}: Nexus cannot "
            "move a repository between blob stores through the API; change the parameter or "
            "recreate the repository",
            step=f"compare {name}",
        )
    return actual


def build_plan(params: RunbookParams, client: NexusClient, apply: bool, secret: SecretResolver) -> Plan:
    plan = Plan("nexus-repos", apply)
    stores = {b.get("name") for b in client.blob_stores()}
    if params.nexus.blob_store not in stores:
        raise StageFailed(
            f"blob store {params.nexus.blob_store!r} does not exist in Nexus "
            f"(found: {', '.join(sorted(s for s in stores if s)) or 'none'})",
            step="read blob stores",
        )
    # Proxies first: a group's members must exist before the group is written.
    for up in params.upstreams:
        password = secret(up.credentials.password, up.credentials.username) if up.credentials else None
        desired = proxy_document(params, up, password)
        actual = client.docker_repository("proxy", up.name)
        _compare(
            plan,
            "docker proxy",
            up.name,
            actual,
            desired,
            lambda d=desired: client.create_docker_repository("proxy", d),
            lambda d=desired: client.update_docker_repository("proxy", d),
            has_secret=password is not None,
        )
    for up in params.upstreams:
        if not up.group:
            continue
        actual = client.docker_repository("group", up.group)
        desired = group_document(params, up, actual)
        _compare(
            plan,
            "docker group",
            up.group,
            actual,
            desired,
            lambda d=desired: client.create_docker_repository("group", d),
            lambda d=desired: client.update_docker_repository("group", d),
            has_secret=False,
        )
    return plan


def endpoints(params: RunbookParams) -> list[dict[str, Any]]:
    """Which repository and connector serve each upstream (for the notebook and the record)."""
    return [
        {
            "registry": u.registry,
            "proxy": u.name,
            "endpoint repository": u.endpoint_repository,
            "connector port": u.connector_port,
            "mirror URL": u.mirror_url or "",
            "upstream": u.remote_url,
        }
        for u in params.upstreams
    ]


def serving_checks(params: RunbookParams, plan: Plan) -> list[Check]:
    """Each upstream's endpoint repository answers the registry API on Nexus's main port.

    ``GET /repository/<name>/v2/`` is the registry's base endpoint behind Nexus's path routing: 200
    (anonymous read) or 401 (a challenge) means the repository serves docker clients; 404 means it does
    not exist. Docker Registry HTTP API V2, "API Version Check" (distribution/distribution,
    docs/spec/api.md). A repository the plan still has to create is skipped in plan mode.
    """
    creating = {c.name for c in plan.pending if c.action == "create"} if not plan.apply_mode else set()
    checks: list[Check] = []
    with net.client(params.resolve, timeout=10) as http:
        for repo in dict.fromkeys(u.endpoint_repository for u in params.upstreams):
            name = f"repository {repo} serves the registry API"
            url = f"{params.nexus.url}/repository/{repo}/v2/"
            if repo in creating:
                checks.append(Check.graded(name, "skipped", "plan mode: the plan creates it"))
                continue
            try:
                status = http.get(url).status_code
            except httpx.HTTPError as err:
                checks.append(Check(name, False, f"{url}: {type(err).__name__}: {err}"))
                continue
            checks.append(Check(name, status in (200, 401), f"{url} answered {status}"))
    return checks


def drift_checks(params: RunbookParams, plan: Plan) -> list[Check]:
    """Plan mode: what differs in Nexus today that breaks the mirror, not only the parameters.

    - A group holding the proxies of other upstreams: containerd names the registry only in ``?ns=``,
      which Nexus ignores, so the group answers every upstream's paths from its first member that has
      them (the reason for one endpoint per upstream, module docstring). Such an upstream's own connector
      is usually gone too: both are named.
    - A proxy whose remote URL differs from ``upstreams[].remote_url`` and does not answer the registry
      API (``GET /v2/``: 200 or 401, distribution/distribution docs/spec/api.md): every pull of an image
      not yet cached fails at the mirror, and containerd falls back to the upstream. A remote that differs
      and answers is a warning: the plan's update shows it, and it may be a move in progress.

    In apply mode the apply has just written the parameters' documents: nothing is left to report.
    """
    if plan.apply_mode:
        return []
    by_name = {u.name: u for u in params.upstreams}
    checks: list[Check] = []
    for change in plan.pending:
        members = change.diff.get("group.memberNames")
        if change.kind == "docker group" and members and isinstance(members[0], list):
            up = next(u for u in params.upstreams if u.group == change.name)
            others = _other_proxies(params, up)
            wrong = [m for m in members[0] if m in others]
            if wrong:
                lost = [
                    f"{m} has no connector of its own"
                    for m in wrong
                    if by_name[m].connector_port and not by_name[m].group and _port_removed(plan, m)
                ]
                checks.append(
                    Check(
                        f"group {change.name} serves {up.registry} only",
                        False,
                        f"it also holds {', '.join(f'{m} ({others[m]})' for m in wrong)}"
                        + (f"; {', '.join(lost)}" if lost else "")
                        + ": one endpoint for several upstreams relies on containerd's ?ns=, which Nexus "
                        "ignores, so the group answers their paths from whichever member has them first "
                        "(--apply gives each upstream its endpoint back)",
                    )
                )
        remote = change.diff.get("proxy.remoteUrl")
        if change.kind == "docker proxy" and remote and remote[0]:
            checks.append(_remote_check(params, change.name, str(remote[0]), str(remote[1])))
    return checks


def _port_removed(plan: Plan, proxy: str) -> bool:
    return any(
        c.kind == "docker proxy" and c.name == proxy and (c.diff.get("docker.httpPort") or [1])[0] is None
        for c in plan.pending
    )


def _remote_check(params: RunbookParams, repo: str, actual: str, wanted: str) -> Check:
    name = f"repository {repo} proxies its upstream's remote URL"
    try:
        with net.client(params.resolve, timeout=5) as http:
            status = http.get(f"{actual.rstrip('/')}/v2/").status_code
        answer = f"answers /v2/ with {status}"
        serves = status in (200, 401)
    except httpx.HTTPError as err:
        answer, serves = f"does not answer ({type(err).__name__})", False
    detail = f"the remote URL in Nexus is {actual}, the parameters say {wanted}; {actual} {answer}"
    if serves:
        return Check.graded(name, "warn", detail + " (the plan sets the parameters' URL)")
    return Check(
        name,
        False,
        detail + ": pulls of images the mirror has not cached fail there and nodes fall back to the "
        "upstream (--apply sets the parameters' URL)",
    )
