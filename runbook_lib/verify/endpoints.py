"""Where the two routes of a pull go, for one upstream.

- direct: the upstream's ``remote_url`` (what Nexus proxies, e.g. https://registry-1.docker.io), anonymous,
  as a node without a mirror would pull;
- mirror: the upstream's ``mirror_url`` (what nodes' hosts.toml names: the Nexus endpoint behind the ingress
  or load balancer), else the repository's path on Nexus's main port (``/repository/<name>``), with the pull
  user's credentials in authenticated mode.

Every client goes through ``net.transport(params.resolve)`` so host overrides apply, as for every HTTP
client of the runbook.
"""

from __future__ import annotations

import httpx

from runbook_lib import net
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import ImageRef, RegistryClient
from runbook_lib.secrets import SecretResolver


def upstream_for(params: RunbookParams, image: ImageRef) -> Upstream | None:
    try:
        return params.upstream(image.registry)
    except KeyError:
        return None


def mirror_url(params: RunbookParams, up: Upstream) -> str:
    return up.mirror_url or f"{params.nexus.url}/repository/{up.endpoint_repository}"


def transport(params: RunbookParams, source_address: str | None = None) -> httpx.BaseTransport | None:
    """The runbook's transport; bound to a local source address when one is given."""
    if source_address:
        return net.ResolvingTransport(params.resolve, local_address=source_address)
    return net.transport(params.resolve)


def mirror_credentials(params: RunbookParams, secret: SecretResolver) -> tuple[str, str] | None:
    sec = params.security
    if sec.mode != "authenticated" or not sec.pull_password:
        return None
    return sec.user, secret(sec.pull_password, sec.user)


def direct_client(
    params: RunbookParams,
    up: Upstream,
    timeout: float,
    source_address: str | None = None,
    max_connections: int = 8,
) -> RegistryClient:
    return RegistryClient(
        up.remote_url,
        timeout=timeout,
        transport=transport(params, source_address),
        max_connections=max_connections,
    )


def mirror_client(
    params: RunbookParams,
    up: Upstream,
    credentials: tuple[str, str] | None,
    timeout: float,
    source_address: str | None = None,
    max_connections: int = 8,
) -> RegistryClient:
    user, password = credentials or (None, None)
    return RegistryClient(
        mirror_url(params, up),
        user,
        password,
        timeout=timeout,
        transport=transport(params, source_address),
        max_connections=max_connections,
    )


def mirror_answers(params: RunbookParams, up: Upstream, timeout: float = 5.0) -> bool:
    """True when the mirror endpoint answers the registry ping (200, or 401 with its challenge)."""
    try:
        with net.client(params.resolve, timeout=timeout) as http:
            return http.get(f"{mirror_url(params, up)}/v2/").status_code in (200, 401)
    except httpx.HTTPError:
        return False
