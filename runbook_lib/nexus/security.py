"""Stage 2: who may pull through the mirror.

- Realms: the Docker Bearer Token realm (``DockerToken``) is added to the active list, keeping its order;
  ``NexusAuthenticatingRealm`` is never dropped (local Basic auth would break); only realms the server
  lists as available are ever sent (the PUT replaces the whole list and rejects unknown ids).
- Anonymous mode: global anonymous access on, connectors with ``forceBasicAuth=false`` (stage 1), and a
  role of our own on the anonymous user (built-in read and browse per mirror endpoint), so nothing but
  the mirrors becomes readable anonymously; what other repositories are read anonymously today stays.
- Authenticated mode: a repository-view privilege (read, optionally browse) per mirror endpoint → one
  role → one local pull user, whose password comes from a secret reference and is only sent on create
  or when rotation is asked for. Anonymous access goes off for other consumers only when nobody else
  reads anonymously or ``security.anonymous_access: off`` says so.
- The plan shows the anonymous read set of the mirror and the other repositories before and after
  (runbook_lib.nexus.access; docs/shared-nexus.md).
- Rotation (``security.rotation``, docs/rotation.md): Nexus keeps one password per local user, so a
  second credential valid beside the first is a second pull user (``next_user``) with the same role;
  ``finish`` deletes ``user`` only when the cluster shows no node that can still be using it.
- Admin bootstrap: while Nexus still accepts its generated admin password, replace it with the managed
  one (and optionally store it in AWS Secrets Manager).
- Community Edition 3.77+: the EULA must be accepted (repository access is blocked until then).
"""

from __future__ import annotations

import json
from typing import Any

from runbook_lib.nexus import access
from runbook_lib.nexus.client import NexusClient
from runbook_lib.nexus.session import AdminLogin
from runbook_lib.nexus.version import NexusVersion, ServerInfo
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Change, Check, Plan, StageFailed
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


def managed_repositories(params: RunbookParams) -> list[str]:
    """Every repository stage 1 manages: the proxies and the groups (endpoints and their members)."""
    seen: list[str] = []
    for up in params.upstreams:
        for name in (up.name, up.group):
            if name and name not in seen:
                seen.append(name)
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
    params: RunbookParams,
    login: AdminLogin,
    apply: bool,
    secret: SecretResolver,
    aws_client: Any = None,
    api_client: Any = None,
) -> Plan:
    """api_client: the Kubernetes API client, read during a rotation (which nodes still use the old user)."""
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

    model = read_model(client)  # roles and privileges, read once for both parts
    _anonymous_changes(params, client, plan, model)
    if sec.mode == "authenticated":
        _pull_user_changes(params, client, plan, secret, model, api_client)
    return plan


def drift_checks(params: RunbookParams, plan: Plan) -> list[Check]:
    """Plan mode: the settings Nexus has today that stop docker clients, named before the access proof
    (which then only sees 401s). In apply mode the apply has just set them.

    - The Docker Bearer Token realm off: Nexus's docker connectors issue no bearer tokens, which every
      docker client needs, anonymous pulls too ("the Docker Bearer Token Realm must be activated" for
      anonymous pull, NEXUS-10813; savoirfairelinux/ansible-nexus3-oss#27).
    - Anonymous mode with anonymous access off: every node pulls without credentials and gets 401, so
      containerd falls back to the upstream on every node.
    """
    if plan.apply_mode:
        return []
    checks: list[Check] = []
    for change in plan.pending:
        if change.kind == "realms" and "order" in change.diff:
            active = change.diff["order"][0] or []
            if DOCKER_TOKEN not in active:
                checks.append(
                    Check(
                        f"Docker Bearer Token realm ({DOCKER_TOKEN}) is active",
                        False,
                        f"{DOCKER_TOKEN} is not among Nexus's active realms ({', '.join(active) or 'none'}): "
                        "the docker endpoints issue no bearer tokens, so every docker client gets 401, "
                        "anonymous ones too (--apply adds it)",
                    )
                )
        if (
            change.kind == "anonymous access"
            and params.security.mode == "anonymous"
            and change.diff.get("enabled", [None])[0] is False
        ):
            checks.append(
                Check(
                    "anonymous access is on (security.mode anonymous: nodes pull without credentials)",
                    False,
                    "anonymous access is disabled in Nexus (Security > Anonymous Access): every node pull "
                    "gets 401 and containerd pulls from the upstream instead (--apply turns it on)",
                )
            )
    return checks


def proof_users(params: RunbookParams) -> list[tuple[str, str, bool]]:
    """(user, password reference, can pull) for the access proof: both users during a rotation; after
    rotation: finish the old one must be refused."""
    sec = params.security
    if sec.rotation is None or not sec.next_user or not sec.next_pull_password:
        return [(sec.user, sec.pull_password or "", True)]
    return [
        (sec.user, sec.pull_password or "", sec.rotation != "finish"),
        (sec.next_user, sec.next_pull_password, True),
    ]


def read_model(client: NexusClient) -> access.SecurityModel:
    return access.SecurityModel(
        {r["id"]: r for r in client.roles()},
        {p["name"]: p for p in client.privileges()},
        [(r["name"], r["format"]) for r in client.repositories()],
    )


def _anonymous_changes(
    params: RunbookParams, client: NexusClient, plan: Plan, model: access.SecurityModel
) -> None:
    """Anonymous access for the mirrors without deciding for the server's other consumers.

    Anonymous mode: our role (read and browse on the mirror endpoints) on the anonymous user; the other
    repositories' anonymous read stays what it is today: roles that would newly expose them when the
    switch turns on are taken off the (so far dormant) anonymous user. Authenticated mode: our role comes
    off; the switch goes off only when nobody else reads anonymously or security.anonymous_access says
    so; with `keep` no remaining role may still read a mirror (privileges cannot be subtracted)."""
    sec = params.security
    settings = client.anonymous()
    uid = settings.get("userId") or "anonymous"
    enabled = bool(settings.get("enabled"))
    user = client.user(uid)
    if user is None:
        raise StageFailed(
            f"the anonymous user {uid!r} (realm {settings.get('realmName')}) is not a local user: "
            "its roles cannot be read or set through the local user API; point the anonymous settings at "
            "a local user or assign the roles in its realm",
            step="read anonymous user",
        )
    endpoints = endpoint_repositories(params)
    mirrors = managed_repositories(params)
    # In a plan before stage 1's apply the mirrors do not exist yet: judge them as they will be.
    present = {name for name, _ in model.repositories}
    model.repositories += [(m, "docker") for m in mirrors if m not in present]
    roles_now = list(user.get("roles") or [])
    before = access.ReadSet.of(model, enabled, roles_now)
    others_before = before.only(mirrors, keep=False)

    after_model = model
    if sec.mode == "anonymous":
        wanted = [
            access.repository_view("docker", repo, action)
            for repo in endpoints
            for action in ("read", "browse")
        ]
        role_body = {
            "id": sec.anonymous_role,
            "name": sec.anonymous_role,
            "description": "anonymous pulls through the registry mirrors only",
            "privileges": sorted(p["name"] for p in wanted),
            "roles": [],
        }
        actual = model.roles.get(sec.anonymous_role)
        plan.compare(
            "role",
            sec.anonymous_role,
            _role_view(actual),
            _role_view(role_body),
            create=lambda: client.create_role(role_body),
            update=lambda: client.update_role(role_body),
            note="read and browse on the mirror endpoints, no content selector",
        )
        after_model = model.with_role(role_body, wanted)
        # Roles that would expose other repositories once the switch turns on are dropped; while the
        # switch is on, whatever others read today they keep.
        dropped = (
            []
            if enabled
            else [
                r for r in roles_now if r != sec.anonymous_role and set(after_model.reads(r)) - set(mirrors)
            ]
        )
        roles_want = [r for r in roles_now if r not in dropped]
        roles_want += [sec.anonymous_role] if sec.anonymous_role not in roles_want else []
        enabled_want = True
        note = (
            f"anonymous access is off today: {', '.join(dropped)} would expose other repositories once "
            "it is on, so it comes off the anonymous user"
            if dropped
            else ""
        )
    else:
        roles_want = [r for r in roles_now if r != sec.anonymous_role]
        # Repositories that do not exist yet have no consumer to lose: only existing ones count here.
        others_read = {r: v for r, v in others_before.by_repository.items() if r != access.LATER}
        choice = sec.anonymous_access
        if enabled and others_read and choice is None:
            raise StageFailed(
                "other repositories are read anonymously today: "
                + "; ".join(f"{r} by role {', '.join(v)}" for r, v in sorted(others_read.items()))
                + ". Authenticated mode will not switch anonymous access off for them on its own: set "
                "security.anonymous_access to 'off' (they lose anonymous read) or 'keep' (anonymous "
                "access stays on; no role of the anonymous user may read a mirror)",
                step="plan anonymous access",
            )
        enabled_want = enabled and choice == "keep"
        if enabled_want:
            still = access.ReadSet.of(model, True, roles_want).only(mirrors)
            if still.by_repository:
                raise StageFailed(
                    "security.anonymous_access: keep, but the anonymous user still reads the mirrors: "
                    + "; ".join(f"{r} by role {', '.join(v)}" for r, v in sorted(still.by_repository.items()))
                    + ". Privileges only grant, a role cannot be subtracted "
                    "(help.sonatype.com/en/privileges.html): replace those roles on the anonymous user "
                    f"{uid!r} with a role that reads only what other consumers need, or set "
                    "security.anonymous_access: off",
                    step="plan anonymous access",
                )
        note = "" if not (enabled and not enabled_want) else "security.anonymous_access: off"

    if sorted(roles_want) != sorted(roles_now):
        body = {**user, "roles": roles_want, "source": user.get("source") or "default"}
        plan.add(
            Change(
                "anonymous user",
                uid,
                "update",
                {"roles": [sorted(roles_now), sorted(roles_want)]},
                note,
                lambda: client.update_user(body),
            )
        )
    else:
        plan.add(Change("anonymous user", uid, "unchanged", note=f"roles {', '.join(sorted(roles_now))}"))

    anon_want = {**settings, "enabled": enabled_want}
    plan.compare(
        "anonymous access",
        "global",
        {"enabled": enabled},
        {"enabled": enabled_want},
        update=lambda: client.set_anonymous(anon_want),
    )
    after = access.ReadSet.of(after_model, enabled_want, roles_want)
    _read_set_change(plan, "mirror repositories", mirrors, before, after)
    names = [n for n, _ in model.repositories if n not in mirrors] + [access.LATER]
    _read_set_change(plan, "other repositories", names, before, after)


def _read_set_change(
    plan: Plan, name: str, repos: list[str], before: access.ReadSet, after: access.ReadSet
) -> None:
    """The anonymous read set before/after, shown in the plan; nothing is written for it."""
    diff = {
        r: [before.describe(r), after.describe(r)] for r in repos if before.describe(r) != after.describe(r)
    }
    reads = [r for r in repos if after.by_repository.get(r)]
    if diff:
        gain = [r for r, (old, new) in diff.items() if old == "no"]
        lose = [r for r, (_, new) in diff.items() if new == "no"]
        other = [r for r in diff if r not in gain and r not in lose]
        note = "; ".join(
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("gain anonymous read", gain),
                ("lose anonymous read", lose),
                ("read through other roles", other),
            )
            if names
        )
        plan.add(
            Change("anonymous read", name, "update", diff, note + " (follows from the changes above)", _none)
        )
    else:
        plan.add(
            Change(
                "anonymous read",
                name,
                "unchanged",
                note=f"read anonymously: {', '.join(reads)}" if reads else "none read anonymously",
            )
        )


def _none() -> None:
    """Nothing to write: an anonymous read set follows from the role, user and switch changes."""


def _pull_user_changes(
    params: RunbookParams,
    client: NexusClient,
    plan: Plan,
    secret: SecretResolver,
    model: access.SecurityModel,
    api_client: Any = None,
) -> None:
    """Privileges, role and user(s) of authenticated mode; privileges and role come from the lists already
    read (``GET /v1/security/privileges`` and ``/roles`` return whole objects), so a no-op rerun sends
    no request per privilege."""
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
            _privilege_view(model.privileges.get(name)),
            desired,
            create=lambda b=body: client.create_repository_view_privilege(b),
            update=lambda b=body: client.update_repository_view_privilege(b),
        )

    actual_role = model.roles.get(sec.role)
    if actual_role is not None and actual_role.get("source", "default") != "default":
        actual_role = client.role(sec.role)  # the list holds another source's role of that id
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

    if sec.rotation is None:
        _user_changes(
            params, client, plan, sec.user, secret(sec.pull_password, sec.user), sec.rotate_password
        )
        return
    _rotation_changes(params, client, plan, secret, api_client)


def _user_changes(
    params: RunbookParams,
    client: NexusClient,
    plan: Plan,
    uid: str,
    password: str,
    rotate: bool = False,
    user: dict | None = None,
    note: str = "",
) -> None:
    """One pull user with the role: created with its password, or compared (status, roles)."""
    sec = params.security
    user = user if user is not None else client.user(uid)
    if user is None:
        body = {
            "userId": uid,
            "firstName": "Registry",
            "lastName": "Pull",
            "emailAddress": f"{uid}@example.invalid",
            "password": password,
            "status": "active",
            "roles": [sec.role],
        }
        plan.add(
            Change(
                "user",
                uid,
                "create",
                {"roles": [None, [sec.role]], "password": [None, "***"]},
                note,
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
        uid,
        {"status": user.get("status"), "roles": sorted(user.get("roles") or [])},
        {"status": want["status"], "roles": want["roles"]},
        update=lambda: client.update_user(want),
        note=note,
    )
    if rotate:
        plan.add(
            Change(
                "user password",
                uid,
                "update",
                {"password": ["***", "***"]},
                "rotation asked for (security.rotate_password)",
                lambda: client.change_password(uid, password),
            )
        )
    else:
        plan.add(
            Change(
                "user password",
                uid,
                "unchanged",
                note="not compared (Nexus never returns it); set security.rotation to rotate it",
            )
        )


def _rotation_changes(
    params: RunbookParams, client: NexusClient, plan: Plan, secret: SecretResolver, api_client: Any
) -> None:
    """A rotation: next_user beside user (start), user retired once no node uses it (finish); the plan
    row "credential rotation" says where it stands and what is next."""
    from runbook_lib.karpenter import credentials

    sec = params.security
    old, new = client.user(sec.user), client.user(sec.next_user)
    on_old: list[str] | None = None
    if params.karpenter.credential_mode == "anonymous":
        on_old = []  # nodes send no credential: none can hold the old one
    elif api_client is not None and new is not None:
        try:
            on_old = credentials.nodes_on_old(params, api_client, secret)
        except Exception as err:  # noqa: BLE001 - an unreadable cluster is "cannot tell", never "none"
            on_old = [f"the cluster's node classes and NodeClaims cannot be read ({type(err).__name__})"]
    status = credentials.rotation_status(params, new is not None, old is not None, on_old)

    if sec.rotation == "finish":
        if new is None:
            raise StageFailed(
                f"security.rotation: finish, but Nexus has no {sec.next_user}: retiring {sec.user} now "
                "would leave nodes with no credential; run security.rotation: start first",
                step="plan credential rotation",
            )
        if old is not None:
            if on_old is None:
                on_old = ["the cluster was not read (no Kubernetes API client for this stage)"]
            if on_old:
                raise StageFailed(
                    f"refusing to retire {sec.user}: nodes may still pull with it (they would get 401 and "
                    f"pull from the upstream): {'; '.join(on_old)}. Next: {status.next}",
                    step="plan credential rotation",
                )
            uid = sec.user
            plan.add(
                Change(
                    "user",
                    uid,
                    "delete",
                    {"status": [old.get("status"), None]},
                    f"rotation finish: no node uses {uid}; {sec.next_user} replaces it",
                    lambda: client.request("DELETE", f"/v1/security/users/{uid}", f"user {uid}"),
                )
            )
    else:
        _user_changes(params, client, plan, sec.user, secret(sec.pull_password, sec.user), user=old)
    _user_changes(
        params,
        client,
        plan,
        sec.next_user,
        secret(sec.next_pull_password, sec.next_user),
        user=new,
        note="rotation: the second pull user, same role, valid beside the first",
    )
    plan.add(status.change())


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
