"""Helpers shared by the tests of the emulated Nexus (tests/lab/test_lab_nexus_*.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from runbook_lab.nexus import NexusEmulator

CONTRACT = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "reference" / "nexus" / "contract.json").read_text()
)
EXAMPLES = CONTRACT["examples"]
UPSTREAM_EXAMPLES = ["Docker Hub", "gcr.io", "quay.io", "ghcr.io", "registry.k8s.io", "public.ecr.aws"]


def example(name: str) -> Any:
    return copy.deepcopy(EXAMPLES[name])


def proxy_body(upstream: str = "Docker Hub", **changes: Any) -> dict[str, Any]:
    body = example(f"POST /v1/repositories/docker/proxy ({upstream})")
    body.update(changes)
    return body


def group_body(**changes: Any) -> dict[str, Any]:
    body = example("POST /v1/repositories/docker/group")
    body["docker"]["httpPort"] = None  # tests never bind fixed ports
    body.update(changes)
    return body


def schema_errors(instance: Any, schema_name: str) -> list[str]:
    """Validate against `#/schemas/<name>` of contract.json; [] when valid."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/schemas/{schema_name}", "schemas": CONTRACT["schemas"]}
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def shape_errors(instance: Any, shape: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(CONTRACT["errorShapes"][shape]["schema"])
    return [e.message for e in validator.iter_errors(instance)]


class Nexus:
    """A started emulator plus convenience clients."""

    def __init__(self, emulator: NexusEmulator) -> None:
        self.emulator = emulator
        self.state = emulator.state
        self.url = emulator.url
        self.rest = emulator.url + "/service/rest"
        self.admin_password = self.initial_admin_password()
        self._clients: list[httpx.Client] = []

    def initial_admin_password(self) -> str:
        saved = self.emulator.data_dir / "admin.password"
        return saved.read_text() if saved.exists() else ""

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        c = httpx.Client(
            base_url=self.rest, auth=auth, timeout=10, verify=False
        )  # plain http; skips CA loading
        self._clients.append(c)
        return c

    def admin(self) -> httpx.Client:
        return self.client(("admin", self.admin_password))

    def close(self) -> None:
        for c in self._clients:
            c.close()


@contextmanager
def running_nexus(data_dir: Path, **kwargs: Any) -> Iterator[Nexus]:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("connectors", False)
    emulator = NexusEmulator(data_dir, **kwargs).start()
    nexus = Nexus(emulator)
    try:
        yield nexus
    finally:
        nexus.close()
        emulator.stop()


def create_proxies(admin: httpx.Client, *upstreams: str) -> None:
    for upstream in upstreams or UPSTREAM_EXAMPLES:
        r = admin.post("/v1/repositories/docker/proxy", json=proxy_body(upstream))
        assert r.status_code == 201, r.text


def create_puller(admin: httpx.Client, password: str = "pull-secret") -> None:
    """The runbook's pull user: repository-view READ on docker-group through role docker-pull."""
    assert (
        admin.post(
            "/v1/security/privileges/repository-view",
            json=example("POST /v1/security/privileges/repository-view"),
        ).status_code
        == 201
    )
    assert admin.post("/v1/security/roles", json=example("POST /v1/security/roles")).status_code == 200
    user = example("POST /v1/security/users")
    user["password"] = password
    assert admin.post("/v1/security/users", json=user).status_code == 200
