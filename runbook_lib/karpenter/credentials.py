"""How a node authenticates to the mirror: the three credential modes.

- ``anonymous`` (recommended): Nexus allows anonymous pulls (stage 2, ``security.mode: anonymous``); nodes
  send nothing and userData holds no secret.
- ``static-header``: the pull user's Basic credentials are written into every hosts.toml as an
  ``Authorization`` header (Bottlerocket: ``settings.container-registry.credentials``). Works everywhere,
  but anything that can read the instance's user data (IMDS, ``ec2:DescribeInstanceAttribute``) reads the
  password, and rotating it changes userData, which drifts (replaces) every node. Flagged in the run record.
- ``secrets-manager`` (AL2/AL2023): userData holds only the secret's id; the boot script reads it with the
  node role (``aws secretsmanager get-secret-value``) and fills in the header. Rotation changes no
  userData, so no drift; new nodes pick up the new value. The secret's value is ``username:password``
  (plain text, so the boot script needs no JSON parser); this stage can create or update it from the pull
  user's password reference.

Rotation (docs/rotation.md): a node keeps the credential it booted with, so a password changed in place
(``security.rotate_password``) makes every existing node get 401 and fall back to the upstream until it is
replaced. ``security.rotation`` instead moves the nodes to a second pull user: ``start`` adds
``next_user`` beside ``user`` (stage 2), stage 4 writes ``next_user`` (once Nexus accepts it) and
Karpenter's drift replaces the nodes; ``finish`` retires ``user`` (stage 2) only when no node can still be
using it. ``rotation_status`` says which phase the servers are in and what comes next.

Why a header at all: hosts.toml has no credential fields, and kubelet's pull secrets for docker.io are not
sent to a mirror on another host (containerd docs/hosts.md;
pkg/cri/server/image_pull.go `registryHosts` and `ParseAuth` @ v1.7.34).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from runbook_lib.containerd.hosts import basic_header
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Change, Check, Plan, StageFailed
from runbook_lib.secrets import REDACTOR, SecretResolver

# Stands for the Authorization value inside hosts.toml until the boot script substitutes it. Only
# characters that are literal in a TOML basic string and in a bash ${var//pattern/...} pattern.
AUTH_PLACEHOLDER = "@@EKS_MIRROR_AUTHORIZATION@@"


class CredentialError(ValueError):
    pass


def node_user(params: RunbookParams) -> tuple[str, str | None]:
    """The pull user (and password reference) stage 4 writes for nodes: next_user once a rotation started."""
    sec = params.security
    if sec.rotation is not None and sec.next_user:
        return sec.next_user, sec.next_pull_password
    return sec.user, sec.pull_password


def node_secret_id(params: RunbookParams) -> str | None:
    """The Secrets Manager id nodes read at boot (secrets-manager mode): the next one during a rotation."""
    k = params.karpenter
    if k.credential_mode != "secrets-manager":
        return None
    if params.security.rotation is not None and k.next_credentials_secret_id:
        return k.next_credentials_secret_id
    return k.credentials_secret_id


def _pull_user(params: RunbookParams, resolve: SecretResolver) -> tuple[str, str]:
    user, ref = node_user(params)
    if not ref:
        raise CredentialError(
            f"credential_mode {params.karpenter.credential_mode} needs security.pull_password "
            "(the pull user's password reference)"
        )
    return user, resolve(ref, user)


def hosts_authorization(params: RunbookParams, resolve: SecretResolver) -> str | None:
    """The Authorization header value to render into hosts.toml (None: no header)."""
    mode = params.karpenter.credential_mode
    if mode == "anonymous":
        return None
    if mode == "secrets-manager":
        return AUTH_PLACEHOLDER
    return basic_header(*_pull_user(params, resolve))


def bottlerocket_auth(params: RunbookParams, resolve: SecretResolver) -> str | None:
    """The `auth` value (base64 of user:password) of Bottlerocket's registry credentials, or None."""
    if params.karpenter.credential_mode != "static-header":
        return None
    user, password = _pull_user(params, resolve)
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def userdata_carries_secret(params: RunbookParams) -> bool:
    return params.karpenter.credential_mode == "static-header"


def flags(params: RunbookParams) -> list[str]:
    """Run-record flags: things an auditor must see even when the run succeeded."""
    out = []
    if userdata_carries_secret(params):
        out.append(
            "karpenter: credential_mode static-header puts the pull user's password into node userData "
            "(readable through IMDS and ec2:DescribeInstanceAttribute; rotation drifts every node)"
        )
    if params.security.rotate_password and params.karpenter.credential_mode != "anonymous":
        out.append(
            "karpenter: security.rotate_password changes the pull password in place: every running node "
            "keeps the old one, gets 401 and pulls from the upstream until replaced; use security.rotation"
        )
    return out


def consistency(params: RunbookParams) -> list[dict[str, Any]]:
    """Checks that the node credential mode matches how Nexus was set up (stage 2)."""
    mode, access = params.karpenter.credential_mode, params.security.mode
    checks = []
    if access == "authenticated" and mode == "anonymous":
        checks.append(
            {
                "name": "node credentials match Nexus access",
                "ok": False,
                "detail": "Nexus refuses anonymous pulls (security.mode authenticated) but nodes send no "
                "credentials: every pull would fall back to the upstream",
            }
        )
    elif access == "anonymous" and mode != "anonymous":
        checks.append(
            {
                "name": "node credentials match Nexus access",
                "ok": True,
                "detail": f"Nexus allows anonymous pulls; credential_mode {mode} is not needed "
                "(anonymous keeps every secret out of the nodes)",
            }
        )
    else:
        checks.append(
            {
                "name": "node credentials match Nexus access",
                "ok": True,
                "detail": f"Nexus {access}, nodes {mode}",
            }
        )
    return checks


# -- the node secret (secrets-manager mode) --------------------------------------------------------------
def node_secret_value(params: RunbookParams, resolve: SecretResolver) -> str:
    user, password = _pull_user(params, resolve)
    return f"{user}:{password}"


def plan_node_secret(
    plan: Plan, params: RunbookParams, resolve: SecretResolver, secretsmanager: Any
) -> Change:
    """Create or update the Secrets Manager secret nodes read at boot (value masked in every record)."""
    from botocore.exceptions import ClientError

    secret_id = node_secret_id(params)
    desired = {"value": node_secret_value(params, resolve)}
    try:
        current: dict[str, Any] | None = {
            "value": secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString")
        }
        if current["value"]:
            REDACTOR.add(current["value"])  # an older password in it is a secret too
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        current = None
    return plan.compare(
        "node secret",
        secret_id,
        current,
        desired,
        create=lambda: secretsmanager.create_secret(
            Name=secret_id,
            SecretString=desired["value"],
            Description="Nexus pull credentials nodes read at boot (eks-mirror-runbook stage 4)",
        ),
        update=lambda: secretsmanager.put_secret_value(SecretId=secret_id, SecretString=desired["value"]),
        secret_keys=("value",),
        note="username:password, read by the node role at boot"
        + (f" ({node_user(params)[0]}, the rotation's next credential)" if params.security.rotation else ""),
    )


# -- rotation ---------------------------------------------------------------------------------------------
ROTATION_CHECK = "credential rotation"


@dataclass(frozen=True)
class RotationStatus:
    """Where a rotation stands: the phase (derived from Nexus and the cluster) and what comes next."""

    phase: str  # none | adding | rolling | ready to retire | retiring | blocked | retired
    next: str
    detail: str = ""

    @property
    def line(self) -> str:
        return f"phase {self.phase}: {self.detail + '; ' if self.detail else ''}next: {self.next}"

    def change(self) -> Change:
        """The plan row: nothing is written for it."""
        return Change(ROTATION_CHECK, "pull credential", "unchanged", note=self.line)

    def check(self) -> Check:
        return Check(ROTATION_CHECK, self.phase != "blocked", self.line)


def rotation_status(
    params: RunbookParams,
    next_exists: bool | None,
    old_exists: bool | None,
    nodes_on_old: list[str] | None,
) -> RotationStatus:
    """The phase from what the servers say (None: not read by this stage).

    next_exists / old_exists: Nexus has (accepts) next_user / user; nodes_on_old: why some node may still
    use user (empty: none does)."""
    sec = params.security
    if sec.rotation is None:
        return RotationStatus(
            "none",
            "to rotate the pull password without a bypass, set security.rotation: "
            "start with next_user and next_pull_password (docs/rotation.md)",
        )
    old, new = sec.user, sec.next_user
    swap = (
        "move next_user/next_pull_password to security.user/pull_password"
        + (
            ", karpenter.next_credentials_secret_id to credentials_secret_id"
            if node_secret_id(params) and params.karpenter.next_credentials_secret_id
            else ""
        )
        + ", then remove security.rotation"
    )
    if sec.rotation == "finish" and old_exists is False:
        return RotationStatus("retired", swap, f"{old} is gone from Nexus; nodes use {new}")
    if next_exists is False:
        return RotationStatus(
            "adding",
            f"stage 2 (nexus-security) --apply creates {new} beside {old}",
            f"Nexus has no {new} yet",
        )
    if nodes_on_old is None:
        if sec.rotation == "finish":
            return RotationStatus("retiring", f"stage 2 --apply retires {old} once no node uses it")
        return RotationStatus(
            "rolling",
            f"stage 4 (karpenter) --apply writes {new} and Karpenter replaces the nodes; when its rollout "
            "check says no old node is left, set security.rotation: finish",
            f"Nexus accepts {old} and {new}",
        )
    if nodes_on_old:
        reasons = "; ".join(nodes_on_old)
        if sec.rotation == "finish":
            return RotationStatus(
                "blocked",
                f"stage 4 --apply and its rollout first: {old} is retired only when no node uses it",
                f"nodes may still use {old}: {reasons}",
            )
        return RotationStatus(
            "rolling", f"stage 4 --apply (and its rollout) moves the nodes to {new}", reasons
        )
    if sec.rotation == "finish":
        return RotationStatus(
            "retiring", f"stage 2 --apply retires {old}", f"every node of the node classes uses {new}"
        )
    return RotationStatus(
        "ready to retire",
        f"set security.rotation: finish and run stage 2 --apply to retire {old}",
        f"every node of the node classes uses {new}",
    )


def nexus_accepts(params: RunbookParams, user: str, password: str) -> tuple[bool, str]:
    """Does the first mirror endpoint let this user pull (the proof's request: /v2/ and a manifest)?"""
    from runbook_lib.nexus import proof

    up = params.upstreams[0]
    url = proof.endpoint_url(params, up.endpoint_repository, up.mirror_url)
    return proof.credential_accepted(params, url, user, password)


def nodes_on_old(params: RunbookParams, api_client: Any, resolve: SecretResolver) -> list[str]:
    """Why a node may still pull with the old credential: a node class whose userData is not yet the one
    stage 4 renders with next_user, or a NodeClaim not launched from the node class as it is now (old,
    terminating, or without a hash to tell). Empty: no node uses the old credential."""
    if params.karpenter.credential_mode == "anonymous":
        return []  # nodes send no credential
    from runbook_lib.karpenter import nodeclass, nodes, rollout

    rendered = nodes.render(params, resolve)
    states = [
        nodeclass.inspect(params, api_client, name, rendered.generated)
        for name in params.karpenter.node_classes
    ]
    out = []
    for s in states:
        if s.exists and s.problems:
            out.append(f"node class {s.name} cannot be read as ours ({' / '.join(s.problems)})")
        elif s.changed:
            out.append(f"node class {s.name} does not carry {node_user(params)[0]} yet")
    base = rollout.Baseline(started=rollout._now(), class_hashes={s.name: s.hash for s in states if s.exists})
    for p in rollout.snapshot(params, api_client, base):
        stale = len(p.old) + len(p.deleting) + len(p.untracked)
        if stale or p.waiting_for_karpenter:
            out.append(f"{p.node_class}: {stale} node(s) not launched from the current userData ({p.line()})")
    return out


def require_next_accepted(params: RunbookParams, resolve: SecretResolver) -> bool | None:
    """Stage 4 writes next_user into userData only once Nexus lets it pull: a credential Nexus refuses
    would send every new node around the mirror (401, then containerd's fallback to the upstream).
    Returns, for rotation: finish, whether Nexus still accepts the old user (else None)."""
    sec = params.security
    if sec.rotation is None or params.karpenter.credential_mode == "anonymous" or not sec.next_user:
        return None
    ok, got = nexus_accepts(params, sec.next_user, resolve(sec.next_pull_password or "", sec.next_user))
    if not ok:
        raise StageFailed(
            f"security.rotation: {sec.rotation}, but Nexus does not let {sec.next_user} pull yet ({got}): "
            "nodes given it would get 401 at the mirror and pull from the upstream. Next: stage 2 "
            f"(nexus-security) --apply creates {sec.next_user} beside {sec.user}",
            step="read credential rotation",
        )
    if sec.rotation != "finish":
        return None
    return nexus_accepts(params, sec.user, resolve(sec.pull_password or "", sec.user))[0]


def node_rotation(
    params: RunbookParams,
    changed_classes: list[str],
    progress: list[Any] | None = None,
    old_accepted: bool | None = None,
) -> RotationStatus | None:
    """Stage 4's view of a rotation (Nexus accepts next_user: require_next_accepted ran): before the
    apply, the node classes still to be written; after the roll, the node classes with old nodes left."""
    if params.security.rotation is None:
        return None
    user = node_user(params)[0]
    if params.karpenter.credential_mode == "anonymous":
        reasons: list[str] = []
    elif progress is None:
        reasons = [f"node class {name} does not carry {user} yet" for name in changed_classes]
    else:
        reasons = [f"{p.node_class}: {p.line()}" for p in progress if not p.done]
    return rotation_status(params, True, old_accepted, reasons)
