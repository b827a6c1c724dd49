"""Who is calling a Nexus docker endpoint, and what Nexus answers when they may not.

Facts (Nexus docs "Docker Authentication" and the Docker Bearer Token realm; docker/login-action#586 for the
401
body; tests/data/reference/nexus/contract.json `dockerRegistry`):
- Unauthenticated `GET /v2/` gets 401. With `forceBasicAuth=false` and the `DockerToken` realm active the
  challenge is `Bearer realm="<scheme>://<host>:<port>/v2/token",service="<same>"` (nexus-public#651, #611:
  built from the request, X-Forwarded-* honoured), otherwise `BASIC realm="Sonatype Nexus Repository
  Manager"` (nexus-public#921). Nexus sends no `scope` in the challenge (nexus-public#659).
- The 401 body is `{"errors":[{"code":"UNAUTHORIZED","message":"access to the requested resource is not
  authorized","detail":null}]}` (docker/login-action#586).
- Tokens look like `DockerToken.<uuid>` (Nexus 3.42 capture). Nexus keeps one docker token per user (it
  lives in the user's API-key store), so the same user gets the same token again [inferred].
- Anonymous pull needs all of: anonymous access enabled, `forceBasicAuth=false`, `DockerToken` realm
  active, read permission for the anonymous user [inferred; Sonatype "Docker Authentication" page].
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

API_VERSION_HEADERS = {"Docker-Distribution-Api-Version": "registry/2.0"}
BASIC_CHALLENGE = 'BASIC realm="Sonatype Nexus Repository Manager"'
TOKEN_REALM_ID = "DockerToken"
UNAUTHORIZED_MESSAGE = "access to the requested resource is not authorized"


class AuthState(Protocol):
    """The part of NexusState this module reads."""

    def authenticate(self, user: str, password: str) -> bool: ...
    def anonymous_enabled(self) -> bool: ...
    def realm_active(self, realm_id: str) -> bool: ...
    def can(self, user_id: str | None, repo: str, action: str) -> bool: ...


def registry_errors(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The Docker Registry v2 error envelope, with `detail` always present (null), as Nexus sends it."""
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


@dataclass(frozen=True)
class Caller:
    """An authenticated principal; `user_id` None is the anonymous user."""

    user_id: str | None
    credentials: str  # "none" | "basic" | "bearer"

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


class TokenStore:
    """Docker bearer tokens issued by `/v2/token`, one stable token per user (None = anonymous).

    With a `path` they survive a restart, as Nexus keeps them with the user's API keys [inferred]."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._path = path
        self._by_token: dict[str, str | None] = {}
        if path is not None and path.is_file():
            try:
                self._by_token = {str(k): v for k, v in json.loads(path.read_text()).items()}
            except (ValueError, AttributeError):
                self._by_token = {}
        self._by_user: dict[str | None, str] = {user: token for token, user in self._by_token.items()}

    def issue(self, user_id: str | None) -> str:
        with self._lock:
            token = self._by_user.get(user_id)
            if token is None:
                token = f"DockerToken.{uuid.uuid4()}"
                self._by_user[user_id] = token
                self._by_token[token] = user_id
                self._save()
            return token

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens are credentials
        with os.fdopen(fd, "w") as f:
            json.dump(self._by_token, f)
        os.replace(tmp, self._path)

    def lookup(self, token: str) -> tuple[bool, str | None]:
        with self._lock:
            if token in self._by_token:
                return True, self._by_token[token]
            return False, None


def parse_authorization(header: str | None) -> tuple[str, str, str] | None:
    """("basic", user, password) or ("bearer", token, "") or None; ("invalid", "", "") if unparseable."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("invalid", "", "")
        return ("basic", user, password) if sep else ("invalid", "", "")
    if scheme.lower() == "bearer" and value:
        return ("bearer", value, "")
    return ("invalid", "", "")


def identify(state: AuthState, tokens: TokenStore, header: str | None) -> Caller | None:
    """The caller behind an Authorization header, or None when the credentials are rejected."""
    parsed = parse_authorization(header)
    if parsed is None:
        return Caller(None, "none")
    kind, first, second = parsed
    if kind == "basic":
        return Caller(first, "basic") if state.authenticate(first, second) else None
    if kind == "bearer":
        # Bearer tokens are honoured only by the Docker Bearer Token Realm; without it they mean nothing.
        if not state.realm_active(TOKEN_REALM_ID):
            return None
        known, user_id = tokens.lookup(first)
        return Caller(user_id, "bearer") if known else None
    return None


def bearer_mode(state: AuthState, repo_config: dict[str, Any]) -> bool:
    """True when the repository challenges with Bearer (forceBasicAuth=false and DockerToken realm active)."""
    docker = repo_config.get("docker") or {}
    return not docker.get("forceBasicAuth", True) and state.realm_active(TOKEN_REALM_ID)


def anonymous_pull_allowed(state: AuthState, repo_name: str, repo_config: dict[str, Any]) -> bool:
    """All four conditions for an anonymous docker pull (help.sonatype.com, "Docker Authentication")."""
    return (
        state.anonymous_enabled() and bearer_mode(state, repo_config) and state.can(None, repo_name, "read")
    )


def may_read(state: AuthState, caller: Caller, repo_name: str, repo_config: dict[str, Any]) -> bool:
    if caller.anonymous:
        return anonymous_pull_allowed(state, repo_name, repo_config)
    return state.can(caller.user_id, repo_name, "read")


def token_realm(headers: Any, mount: str, fallback_host: str) -> str:
    """`<scheme>://<host>[:port]<mount>/v2/token` from the request, honouring X-Forwarded-Proto/Host/Port.

    Nexus 3.78-3.80 doubled the port when X-Forwarded-Host already carried one (nexus-public#611, #651);
    that bug is not reproduced here.
    """
    proto = _first(headers.get("X-Forwarded-Proto")) or "http"
    host = _first(headers.get("X-Forwarded-Host")) or headers.get("Host") or fallback_host
    port = _first(headers.get("X-Forwarded-Port"))
    if port and not _has_port(host):
        host = f"{host}:{port}"
    return f"{proto}://{host}{mount}/v2/token"


def challenge(state: AuthState, repo_config: dict[str, Any], realm: str) -> str:
    if bearer_mode(state, repo_config):
        return f'Bearer realm="{realm}",service="{realm}"'
    return BASIC_CHALLENGE


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def _has_port(host: str) -> bool:
    if host.startswith("["):  # [::1]:8082
        return "]:" in host
    return ":" in host
