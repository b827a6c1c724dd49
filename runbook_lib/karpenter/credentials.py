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

Why a header at all: hosts.toml has no credential fields, and kubelet's pull secrets for docker.io are not
sent to a mirror on another host (containerd docs/hosts.md;
pkg/cri/server/image_pull.go `registryHosts` and `ParseAuth` @ v1.7.34).
"""

from __future__ import annotations

import base64
from typing import Any

from runbook_lib.containerd.hosts import basic_header
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Change, Plan
from runbook_lib.secrets import REDACTOR, SecretResolver

# Stands for the Authorization value inside hosts.toml until the boot script substitutes it. Only
# characters that are literal in a TOML basic string and in a bash ${var//pattern/...} pattern.
AUTH_PLACEHOLDER = "@@EKS_MIRROR_AUTHORIZATION@@"


class CredentialError(ValueError):
    pass


def _pull_user(params: RunbookParams, resolve: SecretResolver) -> tuple[str, str]:
    sec = params.security
    if not sec.pull_password:
        raise CredentialError(
            f"credential_mode {params.karpenter.credential_mode} needs security.pull_password "
            "(the pull user's password reference)"
        )
    return sec.user, resolve(sec.pull_password, sec.user)


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

    secret_id = params.karpenter.credentials_secret_id
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
        note="username:password, read by the node role at boot; rotation changes no userData",
    )
