"""Nexus Repository 3 REST client (httpx).

Owns one connection pool, Basic auth, timeouts, retries and the error mapping. Facts it relies on
(sonatype/nexus-public siesta and security REST resources; nexus-repo-api-client spec/openapi.yaml):
- every call is pre-emptive Basic auth under ``/service/rest``; wrong credentials give 401, missing
  ones 403 with an empty body;
- success codes differ per resource (repository create 201, role/user create 200 with a body, ...),
  so callers never assume 201 — any 2xx is success;
- error bodies come in three shapes (validation list, ``{"id":"*","message":"\\"...\\""}`` since 3.49,
  a bare JSON string before), plus empty bodies and ``text/plain`` 500s; all are parsed into one
  ``NexusError`` that names the resource.
Only idempotent requests are retried (connection errors and 5xx, with backoff); a POST never is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from runbook_lib import net
from runbook_lib.nexus.version import ServerInfo, parse_server_header
from runbook_lib.secrets import REDACTOR

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass
class NexusError(Exception):
    """A Nexus REST call failed. ``messages`` holds (id, message) pairs from any of the error shapes."""

    status: int
    method: str
    path: str
    resource: str
    messages: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    def __str__(self) -> str:
        what = "; ".join(f"{i}: {m}" if i and i != "*" else m for i, m in self.messages) or self.body[:200]
        text = f"{self.resource}: Nexus answered {self.status} to {self.method} {self.path}"
        return REDACTOR.scrub(text + (f" — {what}" if what else ""))


class NexusNotFound(NexusError):
    pass


class NexusValidationError(NexusError):
    pass


class NexusAuthError(NexusError):
    """401 (wrong credentials) or 403 (none, or not allowed)."""


class NexusServerError(NexusError):
    pass


class NexusUnreachable(Exception):
    pass


def parse_error_body(text: str) -> list[tuple[str, str]]:
    """The three documented error shapes, plus text/plain; empty bodies give []."""
    text = text.strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return [("", text)]  # text/plain, e.g. "ERROR: (ID <uuid>) ..." on 500
    if isinstance(doc, list):
        return [
            (str(e.get("id", "")), _unquote(str(e.get("message", "")))) for e in doc if isinstance(e, dict)
        ]
    if isinstance(doc, dict) and "message" in doc:
        return [(str(doc.get("id", "*")), _unquote(str(doc["message"])))]
    if isinstance(doc, str):
        return [("", doc)]
    return [("", text)]


def _unquote(message: str) -> str:
    # Since 3.49 the message text itself carries literal double quotes: "\"Repository not found\"".
    if len(message) >= 2 and message[0] == message[-1] == '"':
        return message[1:-1]
    return message


class NexusClient:
    def __init__(
        self,
        base_url: str,
        username: str | None,
        password: str | None,
        timeout: float = 15.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        auth = httpx.BasicAuth(username, password) if username is not None and password is not None else None
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.http = httpx.Client(
            verify=net.ssl_context(),
            base_url=f"{self.base_url}/service/rest",
            auth=auth,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status): what this client sent
        self._login_realms: list[str] | None = None  # check_admin's answer, until realms_active uses it

    def close(self) -> None:
        self.http.close()

    def use_credentials(self, username: str, password: str) -> None:
        """Switch the login, e.g. right after the admin password was changed."""
        self.http.auth = httpx.BasicAuth(username, password)

    def __enter__(self) -> NexusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        resource: str,
        *,
        json_body: Any = None,
        text_body: str | None = None,
        params: dict[str, Any] | None = None,
        ok_missing: bool = False,
    ) -> httpx.Response | None:
        """Send one request; raise a typed NexusError for non-2xx (or return None for 404 if ok_missing)."""
        kwargs: dict[str, Any] = {"params": {k: v for k, v in (params or {}).items() if v is not None}}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif text_body is not None:
            kwargs["content"] = text_body.encode()
            kwargs["headers"] = {"Content-Type": "text/plain"}
        attempts = self.retries + 1 if method in IDEMPOTENT else 1
        last_exc: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))
            try:
                resp = self.http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                last_exc = err
                continue
            self.requests.append((method, path, resp.status_code))
            if resp.status_code >= 500 and attempt + 1 < attempts:
                last_exc = None
                continue
            break
        else:
            if last_exc is not None:
                raise NexusUnreachable(
                    f"{resource}: cannot reach Nexus at {self.base_url}: "
                    f"{type(last_exc).__name__}: {last_exc}"
                ) from None
        if resp.is_success:
            return resp
        if resp.status_code == 404 and ok_missing:
            return None
        raise self._error(resp, method, path, resource)

    @staticmethod
    def _error(resp: httpx.Response, method: str, path: str, resource: str) -> NexusError:
        messages = parse_error_body(resp.text)
        cls: type[NexusError]
        if resp.status_code == 404:
            cls = NexusNotFound
        elif resp.status_code in (401, 403):
            cls = NexusAuthError
        elif resp.status_code in (400, 409, 422):
            cls = NexusValidationError
        elif resp.status_code >= 500:
            cls = NexusServerError
        else:
            cls = NexusError
        return cls(resp.status_code, method, path, resource, messages, REDACTOR.scrub(resp.text[:2000]))

    def get_json(
        self, path: str, resource: str, params: dict[str, Any] | None = None, ok_missing: bool = False
    ) -> Any:
        resp = self.request("GET", path, resource, params=params, ok_missing=ok_missing)
        return None if resp is None else resp.json()

    def pages(self, path: str, resource: str, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """Items of a paged endpoint (components, search), following continuation tokens."""
        query = dict(params or {})
        while True:
            page = self.get_json(path, resource, query)
            yield from page.get("items", [])
            token = page.get("continuationToken")
            if not token:
                return
            query["continuationToken"] = token

    # -- server --------------------------------------------------------------------------------
    def server_info(self) -> ServerInfo | None:
        resp = self.request("GET", "/v1/status", "status")  # retried like every read
        return parse_server_header(resp.headers.get("server")) if resp is not None else None

    # -- repositories --------------------------------------------------------------------------
    def repositories(self) -> list[dict]:
        return self.get_json("/v1/repositories", "repositories")

    def docker_repository(self, kind: str, name: str) -> dict | None:
        """The typed document of a docker proxy or group, or None when absent (404)."""
        return self.get_json(
            f"/v1/repositories/docker/{kind}/{name}", f"docker {kind} {name}", ok_missing=True
        )

    def create_docker_repository(self, kind: str, body: dict) -> None:
        self.request(
            "POST", f"/v1/repositories/docker/{kind}", f"docker {kind} {body['name']}", json_body=body
        )

    def update_docker_repository(self, kind: str, body: dict) -> None:
        name = body["name"]
        self.request("PUT", f"/v1/repositories/docker/{kind}/{name}", f"docker {kind} {name}", json_body=body)

    def delete_repository(self, name: str) -> None:
        self.request("DELETE", f"/v1/repositories/{name}", f"repository {name}")

    def blob_stores(self) -> list[dict]:
        return self.get_json("/v1/blobstores", "blob stores")

    # -- security ------------------------------------------------------------------------------
    def realms_available(self) -> list[dict]:
        return self.get_json("/v1/security/realms/available", "realms")

    def realms_active(self) -> list[str]:
        # The login check's read, if it is still unused: a stage's first look at the realms follows the
        # login at once, so one request serves both (and a no-op reconcile stays within its bound).
        realms, self._login_realms = self._login_realms, None
        return realms if realms is not None else self.get_json("/v1/security/realms/active", "realms")

    def check_admin(self) -> bool:
        """True when the credentials read an admin-only setting (the active realms, nexus:settings:read)."""
        try:
            self._login_realms = self.get_json("/v1/security/realms/active", "realms")
        except NexusAuthError:
            return False
        return True

    def set_realms_active(self, realm_ids: list[str]) -> None:
        self._login_realms = None
        self.request("PUT", "/v1/security/realms/active", "active realms", json_body=realm_ids)

    def anonymous(self) -> dict:
        return self.get_json("/v1/security/anonymous", "anonymous access")

    def set_anonymous(self, settings: dict) -> dict:
        resp = self.request("PUT", "/v1/security/anonymous", "anonymous access", json_body=settings)
        return resp.json() if resp is not None and resp.content else {}

    def privileges(self) -> list[dict]:
        return self.get_json("/v1/security/privileges", "privileges")

    def roles(self) -> list[dict]:
        # Every source's roles; the built-in nx-admin and nx-anonymous are source "default".
        return self.get_json("/v1/security/roles", "roles")

    def privilege(self, name: str) -> dict | None:
        return self.get_json(f"/v1/security/privileges/{name}", f"privilege {name}", ok_missing=True)

    def create_repository_view_privilege(self, body: dict) -> None:
        self.request(
            "POST", "/v1/security/privileges/repository-view", f"privilege {body['name']}", json_body=body
        )

    def update_repository_view_privilege(self, body: dict) -> None:
        name = body["name"]
        self.request(
            "PUT", f"/v1/security/privileges/repository-view/{name}", f"privilege {name}", json_body=body
        )

    def role(self, role_id: str) -> dict | None:
        return self.get_json(
            f"/v1/security/roles/{role_id}", f"role {role_id}", {"source": "default"}, ok_missing=True
        )

    def create_role(self, body: dict) -> dict:
        return self.request("POST", "/v1/security/roles", f"role {body['id']}", json_body=body).json()

    def update_role(self, body: dict) -> None:
        self.request("PUT", f"/v1/security/roles/{body['id']}", f"role {body['id']}", json_body=body)

    def user(self, user_id: str) -> dict | None:
        # The userId query is a case-insensitive prefix match: keep only the exact id.
        found = self.get_json(
            "/v1/security/users", f"user {user_id}", {"userId": user_id, "source": "default"}
        )
        return next((u for u in found if u.get("userId") == user_id), None)

    def create_user(self, body: dict) -> dict:
        return self.request("POST", "/v1/security/users", f"user {body['userId']}", json_body=body).json()

    def update_user(self, body: dict) -> None:
        self.request("PUT", f"/v1/security/users/{body['userId']}", f"user {body['userId']}", json_body=body)

    def change_password(self, user_id: str, password: str) -> None:
        self.request(
            "PUT",
            f"/v1/security/users/{user_id}/change-password",
            f"password of {user_id}",
            text_body=password,
        )

    # -- system --------------------------------------------------------------------------------
    def eula(self) -> dict | None:
        return self.get_json("/v1/system/eula", "EULA", ok_missing=True)

    def accept_eula(self, disclaimer: str) -> None:
        self.request(
            "POST", "/v1/system/eula", "EULA", json_body={"accepted": True, "disclaimer": disclaimer}
        )

    # -- content -------------------------------------------------------------------------------
    def components(self, repository: str) -> Iterator[dict]:
        return self.pages("/v1/components", f"components of {repository}", {"repository": repository})

    def search(self, **query: Any) -> Iterator[dict]:
        return self.pages("/v1/search", "search", query)
