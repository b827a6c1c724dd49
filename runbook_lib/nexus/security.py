"""Stage 2: who may pull through the mirror.

- Realms: the Docker Bearer Token realm (``DockerToken``) is added to the active list, keeping its order;
  ``NexusAuthenticatingRealm`` is never dropped (local Basic auth would break); only realms the server
  lists as available are ever sent (the PUT replaces the whole list and rejects unknown ids).
- Anonymous mode: global anonymous access on, connectors with ``forceBasicAuth=false`` (stage 1).
- Authenticated mode: anonymous access off; a repository-view privilege (read, optionally browse) per
  mirror endpoint → one role → one local pull user, whose password comes from a secret reference and
  is only sent on create or when rotation is asked for.
- Admin bootstrap: while Nexus still accepts its generated admin password, replace it with the managed
  one (and optionally store it in AWS Secrets Manager).
- Community Edition 3.77+: the EULA must be accepted (repository access is blocked until then).
"""

from __future__ import annotations

import json
from typing import Any

from runbook_lib.nexus.client import NexusClient
from runbook_lib.nexus.session import AdminLogin
from runbook_lib.nexus.version import NexusVersion, ServerInfo
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Change, Plan, StageFailed
from runbook_lib.secrets import SecretResolver

AUTHENTICATING = "NexusAuthenticatingRealm"
DOCKER_TOKEN = "DockerToken"
EULA_SINCE = NexusVersion(3, 77, 0)


def endpoint_repositories(params: RunbookParams) -> list[str]:
    seen: list[str] = []
    for up in params.upstreams:
        if up.endpoint_repository not in seen:
            seen.append(up.endpoint_repository)
    return seen


def privilege_name(params: RunbookParams, repo: str) -> str:
    return f"{params.security.privilege}-{repo}"


def desired_realms(active: list[str], available: list[str]) -> list[str]:
    if DOCKER_TOKEN not in available:
        raise StageFailed(
            "Nexus does not offer the Docker Bearer Token realm (DockerToken) — is the docker "
            "format available on this server?",
            step="read realms",
        )
    want = list(active)
    if AUTHENTICATING not in want and AUTHENTICATING in available:
        want.insert(0, AUTHENTICATING)
    if DOCKER_TOKEN not in want:
        want.append(DOCKER_TOKEN)
    # The PUT replaces the list and rejects ids the server does not list (e.g. NexusAuthorizingRealm >= 3.60).
    return [r for r in want if r in available]


def _privilege_view(doc: dict | None) -> dict | None:
    if doc is None:
        return None
    return {
        "type": doc.get("type"),
        "format": doc.get("format"),
        "repository": doc.get("repository"),
        "actions": sorted(a.upper() for a in doc.get("actions") or []),
        "description": doc.get("description"),
    }


def _role_view(doc: dict | None) -> dict | None:
    if doc is None:
        return None
    return {
        "name": doc.get("name"),
        "description": doc.get("description"),
        "privileges": sorted(doc.get("privileges") or []),
        "roles": sorted(doc.get("roles") or []),
    }


def eula_change(params: RunbookParams, client: NexusClient, server: ServerInfo | None, plan: Plan) -> None:
    if server is None or server.edition != "COMMUNITY" or server.version < EULA_SINCE:
        return
    eula = client.eula()
    if eula is None:
        return
    if eula.get("accepted"):
        plan.add(Change("eula", "community-edition", "unchanged"))
        return
    if not params.nexus.accept_eula:
        raise StageFailed(
            "Nexus Community Edition blocks repository access until its EULA is accepted. Read it "
            f"(GET /service/rest/v1/system/eula: {eula.get('disclaimer', '')[:200]!r}…) and set "
            "nexus.accept_eula: true to accept it here.",
            step="read EULA",
        )
    disclaimer = eula.get("disclaimer", "")
    plan.add(
        Change(
            "eula",
            "community-edition",
            "create",
            {"accepted": [False, True]},
            "accepting the Community Edition EULA (nexus.accept_eula: true)",
            lambda: client.accept_eula(disclaimer),
        )
    )


def build_plan(
    params: RunbookParams, login: AdminLogin, apply: bool, secret: SecretResolver, aws_client: Any = None
) -> Plan:
    client = login.client
    sec = params.security
    plan = Plan("nexus-security", apply)
    server = client.server_info()

    # Admin bootstrap first: every later write then uses the managed password.
    if login.source == "initial":
        managed = secret(params.nexus.admin_password, params.nexus.admin_user)
        writes = [
            lambda: client.change_password(params.nexus.admin_user, managed),
            lambda: client.use_credentials(params.nexus.admin_user, managed),
        ]
        if params.nexus.store_admin_password_in and aws_client is not None:
            writes.append(
                lambda: store_secret(
                    aws_client, params.nexus.store_admin_password_in, params.nexus.admin_user, managed
                )
            )
        plan.add(
            Change(
                "admin password",
                params.nexus.admin_user,
                "update",
                {"password": ["***", "***"]},
                "replace Nexus's generated admin password with the managed one",
                lambda: [w() for w in writes],
            )
        )
    else:
        plan.add(
            Change("admin password", params.nexus.admin_user, "unchanged", note="managed password in use")
        )

    eula_change(params, client, server, plan)

    available = [r["id"] for r in client.realms_available()]
    active = client.realms_active()
    want = desired_realms(active, available)
    plan.compare(
        "realms", "active", {"order": active}, {"order": want}, update=lambda: client.set_realms_active(want)
    )

    anon = client.anonymous()
    anon_want = {**anon, "enabled": sec.mode == "anonymous"}
    plan.compare(
        "anonymous access",
        "global",
        {"enabled": anon.get("enabled")},
        {"enabled": anon_want["enabled"]},
        update=lambda: client.set_anonymous(anon_want),
    )

    if sec.mode == "authenticated":
        _pull_user_changes(params, client, plan, secret)
    return plan


def _pull_user_changes(
    params: RunbookParams, client: NexusClient, plan: Plan, secret: SecretResolver
) -> None:
    sec = params.security
    actions = ["READ", "BROWSE"] if sec.browse else ["READ"]
    privileges = []
    for repo in endpoint_repositories(params):
        name = privilege_name(params, repo)
        privileges.append(name)
        body = {
            "name": name,
            "description": f"pull through mirror endpoint {repo}",
            "actions": actions,
            "format": "docker",
            "repository": repo,
        }
        desired = {
            "type": "repository-view",
            "format": "docker",
            "repository": repo,
            "actions": sorted(actions),
            "description": body["description"],
        }
        plan.compare(
            "privilege",
            name,
            _privilege_view(client.privilege(name)),
            desired,
            create=lambda b=body: client.create_repository_view_privilege(b),
            update=lambda b=body: client.update_repository_view_privilege(b),
        )

    actual_role = client.role(sec.role)
    role_body = {
        "id": sec.role,
        "name": sec.role,
        "description": "pull images through the registry mirror",
        "privileges": sorted(set(privileges) | set((actual_role or {}).get("privileges") or [])),
        "roles": (actual_role or {}).get("roles") or [],
    }
    plan.compare(
        "role",
        sec.role,
        _role_view(actual_role),
        _role_view(role_body),
        create=lambda: client.create_role(role_body),
        update=lambda: client.update_role(role_body),
    )

    password = secret(sec.pull_password, sec.user)
    user = client.user(sec.user)
    if user is None:
        body = {
            "userId": sec.user,
            "firstName": "Registry",
            "lastName": "Pull",
            "emailAddress": f"{sec.user}@example.invalid",
            "password": password,
            "status": "active",
            "roles": [sec.role],
        }
        plan.add(
            Change(
                "user",
                sec.user,
                "create",
                {"roles": [None, [sec.role]], "password": [None, "***"]},
                write=lambda: client.create_user(body),
            )
        )
        return
    want = {
        **user,
        "status": "active",
        "roles": sorted(set(user.get("roles") or []) | {sec.role}),
        "source": user.get("source") or "default",
    }
    plan.compare(
        "user",
        sec.user,
        {"status": user.get("status"), "roles": sorted(user.get("roles") or [])},
        {"status": want["status"], "roles": want["roles"]},
        update=lambda: client.update_user(want),
    )
    if sec.rotate_password:
        plan.add(
            Change(
                "user password",
                sec.user,
                "update",
                {"password": ["***", "***"]},
                "rotation asked for (security.rotate_password)",
                lambda: client.change_password(sec.user, password),
            )
        )
    else:
        plan.add(
            Change(
                "user password",
                sec.user,
                "unchanged",
                note="not compared (Nexus never returns it); set security.rotate_password to send it",
            )
        )


def store_secret(aws_client: Any, secret_id: str, username: str, password: str) -> None:
    value = json.dumps({"username": username, "password": password})
    try:
        aws_client.put_secret_value(SecretId=secret_id, SecretString=value)
    except aws_client.exceptions.ResourceNotFoundException:
        aws_client.create_secret(Name=secret_id, SecretString=value)


def secrets_manager(params: RunbookParams) -> Any:
    """The Secrets Manager client when the admin password is to be stored there, else None."""
    if not params.nexus.store_admin_password_in:
        return None
    from runbook_lib import aws

    return aws.client(params, "secretsmanager")
