"""Nexus client: error shapes, retry policy, pagination, exact user match (httpx transport)."""

from __future__ import annotations

import json

import httpx
import pytest

from runbook_lib.nexus.client import (
    NexusAuthError,
    NexusClient,
    NexusNotFound,
    NexusServerError,
    NexusUnreachable,
    NexusValidationError,
    parse_error_body,
)


def client(handler) -> NexusClient:
    return NexusClient(
        "http://nexus.test", "admin", "pw", retries=2, backoff_s=0, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[ {"id" : "PARAMETER blobStoreName", "message" : "must not be empty"} ]',
            [("PARAMETER blobStoreName", "must not be empty")],
        ),
        ('{"id":"*","message":"\\"Repository not found\\""}', [("*", "Repository not found")]),
        (
            "\"Role 'x' already exists, use a unique roleId.\"",
            [("", "Role 'x' already exists, use a unique roleId.")],
        ),
        (
            "ERROR: (ID 1b2c) org.sonatype.nexus.security.user.DuplicateUserException",
            [("", "ERROR: (ID 1b2c) org.sonatype.nexus.security.user.DuplicateUserException")],
        ),
        ("", []),
    ],
)
def test_error_shapes(body, expected) -> None:
    assert parse_error_body(body) == expected


def test_typed_errors_name_the_resource() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/proxy"):
            return httpx.Response(400, json=[{"id": "PARAMETER indexType", "message": "must not be empty"}])
        if req.url.path.endswith("/users"):
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'BASIC realm="Sonatype Nexus Repository Manager"'}
            )
        return httpx.Response(404, json={"id": "*", "message": '"Repository not found"'})

    with client(handler) as c:
        with pytest.raises(NexusValidationError) as err:
            c.create_docker_repository("proxy", {"name": "docker-hub"})
        assert "docker proxy docker-hub" in str(err.value) and "indexType" in str(err.value)
        with pytest.raises(NexusAuthError):
            c.create_user({"userId": "u"})
        assert c.docker_repository("proxy", "nope") is None
        with pytest.raises(NexusNotFound):
            c.delete_repository("nope")


def test_retries_idempotent_requests_only() -> None:
    calls = {"GET": 0, "POST": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        calls[req.method] += 1
        return httpx.Response(503)

    with client(handler) as c:
        with pytest.raises(NexusServerError):
            c.repositories()
        with pytest.raises(NexusServerError):
            c.create_role({"id": "r"})
    assert calls == {"GET": 3, "POST": 1}


def test_connection_errors_are_retried_then_reported() -> None:
    attempts = []

    def handler(req: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused", request=req)

    with client(handler) as c, pytest.raises(NexusUnreachable, match="cannot reach Nexus"):
        c.realms_active()
    assert len(attempts) == 3


def test_pagination_follows_continuation_tokens() -> None:
    pages = {
        None: {"items": [{"name": "a"}], "continuationToken": "t1"},
        "t1": {"items": [{"name": "b"}], "continuationToken": None},
    }

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.params["repository"] == "docker-hub"
        return httpx.Response(200, json=pages[req.url.params.get("continuationToken")])

    with client(handler) as c:
        assert [i["name"] for i in c.components("docker-hub")] == ["a", "b"]


def test_user_lookup_is_exact_despite_prefix_search() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"userId": "docker-pull-old"}, {"userId": "docker-pull"}])

    with client(handler) as c:
        assert c.user("docker-pull") == {"userId": "docker-pull"}
        assert c.user("docker") is None


def test_change_password_is_text_plain() -> None:
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen["ct"] = req.headers["content-type"]
        seen["body"] = req.content
        return httpx.Response(204)

    with client(handler) as c:
        c.change_password("admin", "n3w-pass")
    assert seen == {"ct": "text/plain", "body": b"n3w-pass"}


def test_server_info_from_header() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Server": "Nexus/3.80.0-06 (COMMUNITY)"})

    with client(handler) as c:
        info = c.server_info()
    assert str(info.version) == "3.80.0-06" and info.edition == "COMMUNITY"


def test_json_body_is_sent_as_json() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["content-type"] == "application/json"
        assert json.loads(req.content) == ["NexusAuthenticatingRealm", "DockerToken"]
        return httpx.Response(204)

    with client(handler) as c:
        c.set_realms_active(["NexusAuthenticatingRealm", "DockerToken"])
