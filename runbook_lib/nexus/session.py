"""Connecting to Nexus as admin, before and after the admin bootstrap.

The managed admin password lives behind a secret reference. On a fresh Nexus it has not been set
yet: the server still accepts the generated one from ``admin.password`` (a file in the data dir, or
the Nexus pod). Stages that run before the security stage's bootstrap therefore fall back to it, and
say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook_lib import net
from runbook_lib.nexus.client import NexusAuthError, NexusClient
from runbook_lib.params import RunbookParams
from runbook_lib.secrets import REDACTOR, SecretError, SecretResolver

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


@dataclass
class AdminLogin:
    client: NexusClient
    source: str  # "managed" or "initial"
    note: str = ""


def read_initial_password(params: RunbookParams, api_client: ApiClient | None = None) -> str | None:
    """The generated admin password, if Nexus still has it (file path or the Nexus pod)."""
    path = params.path(params.nexus.initial_password_file)
    if path is not None and path.exists():
        value = path.read_text().strip()
        REDACTOR.add_pair(params.nexus.admin_user, value)
        return value or None
    pod = params.nexus.initial_password_pod
    if pod and api_client is not None:
        from runbook_lib.kube_exec import read_file_in_pod

        value = read_file_in_pod(api_client, pod, "/nexus-data/admin.password")
        if value:
            REDACTOR.add_pair(params.nexus.admin_user, value.strip())
            return value.strip()
    return None


def _works(client: NexusClient) -> bool:
    return client.check_admin()


def admin_login(
    params: RunbookParams, secret: SecretResolver, api_client: ApiClient | None = None
) -> AdminLogin:
    n = params.nexus
    problems = []
    try:
        managed = secret(n.admin_password, n.admin_user)
    except SecretError as err:
        managed = None
        problems.append(str(err))
    if managed:
        client = NexusClient(
            n.url, n.admin_user, managed, timeout=n.timeout_s, transport=net.transport(params.resolve)
        )
        if _works(client):
            return AdminLogin(client, "managed")
        client.close()
        problems.append("the managed admin password was refused")
    initial = read_initial_password(params, api_client)
    if initial:
        client = NexusClient(
            n.url, n.admin_user, initial, timeout=n.timeout_s, transport=net.transport(params.resolve)
        )
        if _works(client):
            return AdminLogin(
                client,
                "initial",
                "logged in with Nexus's generated admin password: the security stage replaces it",
            )
        client.close()
        problems.append("the generated admin password (admin.password) was refused")
    raise NexusAuthError(
        401,
        "GET",
        "/v1/security/realms/active",
        "admin login",
        [("", "; ".join(problems) or "no admin password available")],
    )
