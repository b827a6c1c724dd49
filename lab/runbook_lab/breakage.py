"""`runbook lab break <fault>` / `runbook lab fix <fault>`: faults that happen in real clusters, put into the
running lab the way a person would put them there (the Nexus REST API, the Kubernetes API, stopping the
Nexus process), each caught by the runbook stage named in ``FAULTS``.

What a break changed is recorded under the lab folder (``DIR/breakage/<fault>.json``), so ``fix`` works
after a lab restart; fixing a fault that is not broken is a no-op that says so. The lab never calls the
runbook's product code to build a broken state: the documents below are what a person would type.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as pysecrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from runbook_lab.processes import pid_alive, port_free, stop_pid

if TYPE_CHECKING:
    from runbook_lab.orchestrator import Lab


@dataclass(frozen=True)
class Fault:
    name: str
    description: str  # what `break` does, as a person would do it in a real cluster
    stage: str  # the runbook stage (plan mode) that catches it
    message: str  # a substring of what that stage prints when it catches it
    why: str = ""  # why that stage, when it is not the obvious one


# The contract the course codes against: name, what break does, the stage that catches it, what the learner
# sees (a substring of the stage's failure).
FAULTS: tuple[Fault, ...] = (
    Fault(
        "tee-append",
        "EC2NodeClass userData replaced by the manual `tee -a` version that appends hosts.toml "
        "(written twice: duplicate [host] tables, containerd ignores the file)",
        "karpenter",
        "appends to /etc/containerd/certs.d/",
    ),
    Fault(
        "single-endpoint",
        "one endpoint for all upstreams relying on containerd's ?ns= (the per-upstream connectors "
        "removed, every proxy a member of the docker group)",
        "nexus-repos",
        "?ns=",
    ),
    Fault(
        "token-realm-off",
        "Docker Bearer Token realm removed from the active realms",
        "nexus-security",
        "DockerToken",
    ),
    Fault(
        "anonymous-off",
        "anonymous access disabled while nodes pull anonymously",
        "nexus-security",
        "anonymous access is disabled",
    ),
    Fault(
        "nexus-down-at-boot",
        "Nexus stopped, a node boots meanwhile",
        "preflight",
        "required endpoint(s) not usable: nexus",
    ),
    Fault(
        "wrong-node-password",
        "the pull password nodes use no longer matches Nexus (changed in Nexus, not on the nodes)",
        "verify",
        "Nexus refuses the pull credential",
        "verify pulls with the credential the nodes were given; needs lab parameters whose nodes pull "
        "with a password (security.mode authenticated, karpenter.credential_mode static-header)",
    ),
    Fault(
        "wrong-remote-url",
        "an upstream proxy's remote URL changed to a wrong one",
        "nexus-repos",
        "remote URL",
    ),
)
BY_NAME = {f.name: f for f in FAULTS}


def table() -> str:
    """The faults as `runbook lab faults` prints them."""
    rows = [("fault", "caught by", "what break does"), *((f.name, f.stage, f.description) for f in FAULTS)]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    return "\n".join(f"{a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows)


class FaultError(Exception):
    """A fault that cannot be put into (or taken out of) this lab; `bad_input`: exit 2, nothing was sent."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def unknown(name: str) -> str:
    return (
        f"unknown fault {name!r}; the faults are: {', '.join(BY_NAME)} (`runbook lab faults` describes them)"
    )


# -- what a person would paste: the manual `tee -a` userData ---------------------------------------------
def _server(registry: str) -> str:
    return "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"


def _tee_block(registry: str, mirror: str) -> list[str]:
    path = f"/etc/containerd/certs.d/{registry}/hosts.toml"
    return [
        f"mkdir -p /etc/containerd/certs.d/{registry}",
        f"cat <<'TOML' | tee -a {path}",
        f'server = "{_server(registry)}"',
        "",
        f'[host."{mirror}"]',
        '  capabilities = ["pull", "resolve"]',
        "TOML",
    ]


def manual_user_data(mirrors: dict[str, str]) -> str:
    """The hosts.toml files the way a setup guide's manual steps write them: the Docker Hub step, then the
    step for every upstream (Docker Hub again), each appending with `tee -a`. docker.io's file ends up with
    `server` and the [host] table twice: TOML forbids both, so containerd cannot decode it."""
    lines = ["#!/bin/bash", "# Registry mirrors, step 1 of the guide: Docker Hub"]
    hub = mirrors.get("docker.io")
    if hub:
        lines += _tee_block("docker.io", hub)
    lines.append("# Step 2 of the guide: every upstream registry")
    for registry, mirror in mirrors.items():
        lines += _tee_block(registry, mirror)
    lines.append("systemctl restart containerd || true")
    return "\n".join(lines) + "\n"


def _wrong_url(url: str) -> str:
    """The remote URL with a mistyped port (nothing listens there), as a person's typo would be."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    wrong = port + 10
    while not port_free(wrong) and wrong < 65535:
        wrong += 1
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{wrong}"))


# -- the lab side of each fault ----------------------------------------------------------------------
BOOT_WAIT_S = 90.0  # nexus-down-at-boot: how long break waits for the replacement node to be Ready
NODE_CLASS_API = {  # karpenter.api_version -> the node class and NodeClaim resources (group, version, plural)
    "v1": (("karpenter.k8s.aws", "v1", "ec2nodeclasses"), ("karpenter.sh", "v1", "nodeclaims")),
    "v1beta1": (
        ("karpenter.k8s.aws", "v1beta1", "ec2nodeclasses"),
        ("karpenter.sh", "v1beta1", "nodeclaims"),
    ),
}


class Breaker:
    """Break and fix faults in one lab; what a break changed is kept in DIR/breakage/<fault>.json."""

    def __init__(self, lab: Lab, say: Callable[[str], None] = lambda _m: None):
        self.lab = lab
        self.params = lab.params
        self.dir = lab.dir / "breakage"
        self.say = say

    # -- records ---------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def broken(self) -> list[str]:
        return [f.name for f in FAULTS if self._path(f.name).exists()]

    def _save(self, name: str, doc: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self._path(name))

    # -- the two actions ---------------------------------------------------------------------------
    def break_fault(self, name: str) -> str:
        fault = BY_NAME[name]
        if self.record(name) is not None:
            return f"{name}: already broken; `runbook lab fix {name}` restores it"
        doc = self._run(getattr(self, "_break_" + name.replace("-", "_")))
        what = doc.pop("what")
        self._save(name, {"fault": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **doc})
        return (
            f"broke {name}: {what}\n"
            f"  the runbook catches it at stage {fault.stage}: "
            f"runbook run {fault.stage} --params <the lab parameters> (plan mode)\n"
            f"  put it back with: runbook lab fix {name}"
        )

    def fix_fault(self, name: str) -> str:
        doc = self.record(name)
        if doc is None:
            return f"{name}: not broken (no record in {self.dir}); nothing to fix"
        what = self._run(getattr(self, "_fix_" + name.replace("-", "_")), doc)
        self._path(name).unlink(missing_ok=True)
        return f"fixed {name}: {what}"

    @staticmethod
    def _run(step: Callable[..., Any], *args: Any) -> Any:
        """One break or fix; what the Nexus or Kubernetes API said when it refused, without a traceback."""
        from kubernetes.client.exceptions import ApiException

        try:
            return step(*args)
        except httpx.HTTPError as err:
            raise FaultError(f"{type(err).__name__}: {err}") from None
        except ApiException as err:
            raise FaultError(f"Kubernetes API: {err.status} {err.reason}") from None

    # -- clients -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _nexus(self) -> Iterator[httpx.Client]:
        """The Nexus REST API as the lab's admin: the managed password, or the generated one (before
        stage 2 replaced it)."""
        n = self.params.nexus
        candidates = [self.lab.lab_secret("nexus-admin")]
        initial = self.params.path(n.initial_password_file) if n.initial_password_file else None
        if initial and initial.is_file():
            candidates.append(initial.read_text().strip())
        for password in candidates:
            http = httpx.Client(base_url=f"{n.url}/service/rest", auth=(n.admin_user, password), timeout=15)
            try:
                status = http.get("/v1/security/anonymous").status_code
            except httpx.HTTPError as err:
                http.close()
                raise FaultError(
                    f"Nexus at {n.url} does not answer ({type(err).__name__}): `runbook lab up`"
                ) from None
            if status == 200:
                try:
                    yield http
                finally:
                    http.close()
                return
            http.close()
        raise FaultError(f"Nexus at {n.url} refused the lab's admin passwords (user {n.admin_user})")

    def _kube(self) -> Any:
        from kubernetes import client, config

        kubeconfig = self.params.path(self.params.kubernetes.kubeconfig) or self.lab.dir / "kubeconfig"
        return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))

    def _apis(self) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        api = NODE_CLASS_API.get(self.params.karpenter.api_version)
        if api is None:
            raise FaultError(
                f"karpenter.api_version {self.params.karpenter.api_version}: the lab breaks EC2NodeClass "
                "(v1, v1beta1) only",
                bad_input=True,
            )
        return api

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> httpx.Response:
        if resp.status_code >= 300:
            raise FaultError(f"{what}: Nexus answered {resp.status_code} {resp.text[:200]}")
        return resp

    def _put_repo(self, http: httpx.Client, kind: str, doc: dict[str, Any]) -> None:
        self._check(http.put(f"/v1/repositories/docker/{kind}/{doc['name']}", json=doc), f"PUT {doc['name']}")

    def _get_repo(self, http: httpx.Client, kind: str, name: str) -> dict[str, Any]:
        return self._check(http.get(f"/v1/repositories/docker/{kind}/{name}"), f"GET {kind} {name}").json()

    # -- tee-append ----------------------------------------------------------------------------------
    def _break_tee_append(self) -> dict[str, Any]:
        (group, version, plural), _claims = self._apis()
        api = self._kube()
        mirrors = {
            u.registry: u.mirror_url
            or f"http://{urlsplit(self.params.nexus.url).hostname}:{u.connector_port}"
            for u in self.params.upstreams
        }
        before = {}
        for name in self.params.karpenter.node_classes:
            obj = api.get_cluster_custom_object(group, version, plural, name)
            before[name] = (obj.get("spec") or {}).get("userData")
            api.patch_cluster_custom_object(
                group, version, plural, name, {"spec": {"userData": manual_user_data(mirrors)}}
            )
        classes = ", ".join(before)
        return {
            "user_data": before,
            "what": f"the userData of node class(es) {classes} replaced by the manual `tee -a` steps "
            "(docker.io's hosts.toml is appended twice)",
        }

    def _fix_tee_append(self, doc: dict[str, Any]) -> str:
        (group, version, plural), _claims = self._apis()
        api = self._kube()
        for name, user_data in doc["user_data"].items():
            api.patch_cluster_custom_object(group, version, plural, name, {"spec": {"userData": user_data}})
        return f"the userData of node class(es) {', '.join(doc['user_data'])} put back"

    # -- single-endpoint ---------------------------------------------------------------------------------
    # Each fix puts back only the fields its break changed, so faults broken together fix in any order.
    def _break_single_endpoint(self) -> dict[str, Any]:
        hub = next((u for u in self.params.upstreams if u.registry == "docker.io" and u.group), None)
        if hub is None:
            raise FaultError(
                "single-endpoint: the parameters give docker.io no group to serve all", bad_input=True
            )
        others = [u for u in self.params.upstreams if u is not hub and not u.group and u.connector_port]
        with self._nexus() as http:
            group = self._get_repo(http, "group", hub.group)
            ports = {}
            for u in others:  # the per-upstream connectors go ...
                doc = self._get_repo(http, "proxy", u.name)
                ports[u.name] = (doc.get("docker") or {}).get("httpPort")
                docker = {k: v for k, v in (doc.get("docker") or {}).items() if k != "httpPort"}
                self._put_repo(http, "proxy", {**doc, "docker": docker})
            members = list(group["group"]["memberNames"])
            added = [n for n in ports if n not in members]  # ... and every proxy joins the one group
            members += added
            self._put_repo(http, "group", {**group, "group": {**group["group"], "memberNames": members}})
        return {
            "group": hub.group,
            "added": added,
            "ports": ports,
            "what": f"connectors removed from {', '.join(ports)}; group {hub.group} (port "
            f"{hub.connector_port}) now serves every upstream: {', '.join(members)}",
        }

    def _fix_single_endpoint(self, doc: dict[str, Any]) -> str:
        with self._nexus() as http:
            group = self._get_repo(http, "group", doc["group"])
            members = [m for m in group["group"]["memberNames"] if m not in doc["added"]]
            self._put_repo(http, "group", {**group, "group": {**group["group"], "memberNames": members}})
            for name, port in doc["ports"].items():
                proxy = self._get_repo(http, "proxy", name)
                docker = {k: v for k, v in (proxy.get("docker") or {}).items() if k != "httpPort"}
                if port is not None:
                    docker["httpPort"] = port
                self._put_repo(http, "proxy", {**proxy, "docker": docker})
        return f"group {doc['group']} and the connectors of {', '.join(doc['ports'])} put back"

    # -- token-realm-off ------------------------------------------------------------------------------
    def _break_token_realm_off(self) -> dict[str, Any]:
        with self._nexus() as http:
            active = self._check(http.get("/v1/security/realms/active"), "GET realms").json()
            if "DockerToken" not in active:
                raise FaultError(
                    "token-realm-off: the Docker Bearer Token realm is not active now (stage 2 adds it)"
                )
            left = [r for r in active if r != "DockerToken"]
            self._check(http.put("/v1/security/realms/active", json=left), "PUT realms")
        return {
            "position": active.index("DockerToken"),
            "what": f"DockerToken removed from the active realms (left: {', '.join(left)})",
        }

    def _fix_token_realm_off(self, doc: dict[str, Any]) -> str:
        with self._nexus() as http:
            active = self._check(http.get("/v1/security/realms/active"), "GET realms").json()
            if "DockerToken" not in active:
                active.insert(min(doc["position"], len(active)), "DockerToken")
                self._check(http.put("/v1/security/realms/active", json=active), "PUT realms")
        return f"active realms: {', '.join(active)}"

    # -- anonymous-off ------------------------------------------------------------------------------
    def _break_anonymous_off(self) -> dict[str, Any]:
        with self._nexus() as http:
            settings = self._check(http.get("/v1/security/anonymous"), "GET anonymous").json()
            self._check(
                http.put("/v1/security/anonymous", json={**settings, "enabled": False}), "PUT anonymous"
            )
        return {
            "enabled": bool(settings.get("enabled")),
            "what": "anonymous access disabled (Security > Anonymous Access)",
        }

    def _fix_anonymous_off(self, doc: dict[str, Any]) -> str:
        with self._nexus() as http:
            settings = self._check(http.get("/v1/security/anonymous"), "GET anonymous").json()
            self._check(
                http.put("/v1/security/anonymous", json={**settings, "enabled": doc["enabled"]}),
                "PUT anonymous",
            )
        return f"anonymous access {'enabled' if doc['enabled'] else 'disabled'} again, as before the break"

    # -- nexus-down-at-boot ----------------------------------------------------------------------------
    def _break_nexus_down_at_boot(self) -> dict[str, Any]:
        rec = self.lab.load_state().get("components", {}).get("nexus")
        if not rec or not pid_alive(rec.get("pid"), Path(rec["argv"][0]).name):
            raise FaultError("nexus-down-at-boot: the lab's Nexus is not running (`runbook lab up` first)")
        _classes, (group, version, plural) = self._apis()
        stop_pid(rec["pid"])
        api = self._kube()
        nodes_before = self._ready_nodes(api)
        claims = sorted(
            i["metadata"]["name"] for i in api.list_cluster_custom_object(group, version, plural)["items"]
        )
        booted = None
        if claims:  # Karpenter replaces it at once: a node boots while Nexus is down
            api.delete_cluster_custom_object(group, version, plural, claims[0])
            deadline = time.monotonic() + BOOT_WAIT_S
            while booted is None and time.monotonic() < deadline:
                booted = next(iter(sorted(self._ready_nodes(api) - nodes_before)), None)
                time.sleep(0.5)
        if not claims:
            booting = "no NodeClaim to replace"
        elif booted:
            booting = (
                f"NodeClaim {claims[0]} deleted; its replacement, node {booted}, booted while Nexus was down"
            )
        else:
            booting = f"NodeClaim {claims[0]} deleted; its replacement is still booting"
        return {
            "pid": rec["pid"],
            "nodeclaim": claims[0] if claims else None,
            "booted": booted,
            "what": f"Nexus stopped (pid {rec['pid']}); {booting}",
        }

    @staticmethod
    def _ready_nodes(api: Any) -> set[str]:
        from kubernetes import client

        items = client.CoreV1Api(api.api_client).list_node().items
        return {
            n.metadata.name
            for n in items
            if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
        }

    def _fix_nexus_down_at_boot(self, doc: dict[str, Any]) -> str:
        # Only Nexus: the node that booted meanwhile keeps running and uses the mirror once it answers.
        started = self.lab.start_component("nexus")
        return "Nexus started again" if started else "Nexus was running already"

    # -- wrong-node-password ---------------------------------------------------------------------------
    def _pull_password(self) -> str:
        """The password the nodes got (the parameters' reference, from the lab's own secret store)."""
        ref = self.params.security.pull_password or ""
        if ref.startswith("aws-sm:lab/"):
            return self.lab.lab_secret(ref.removeprefix("aws-sm:lab/").split("#", 1)[0])
        if ref.startswith("env:") and ref[4:] in os.environ:
            return os.environ[ref[4:]]
        raise FaultError(
            "wrong-node-password: security.pull_password is not a lab secret (aws-sm:lab/... or env:)"
        )

    def _break_wrong_node_password(self) -> dict[str, Any]:
        sec, k = self.params.security, self.params.karpenter
        if sec.mode != "authenticated" or k.credential_mode == "anonymous":
            raise FaultError(
                f"wrong-node-password: the nodes of this lab pull anonymously (security.mode {sec.mode}, "
                f"karpenter.credential_mode {k.credential_mode}), so no password on them can go wrong; use "
                "lab parameters with security.mode authenticated and karpenter.credential_mode static-header",
                bad_input=True,
            )
        self._pull_password()  # fix must be able to put it back
        with self._nexus() as http:
            self._check(
                http.put(
                    f"/v1/security/users/{sec.user}/change-password",
                    content=pysecrets.token_urlsafe(18),
                    headers={"Content-Type": "text/plain"},
                ),
                f"change the password of {sec.user}",
            )
        return {
            "user": sec.user,
            "what": f"the password of pull user {sec.user} changed in Nexus (not on the nodes)",
        }

    def _fix_wrong_node_password(self, doc: dict[str, Any]) -> str:
        with self._nexus() as http:
            self._check(
                http.put(
                    f"/v1/security/users/{doc['user']}/change-password",
                    content=self._pull_password(),
                    headers={"Content-Type": "text/plain"},
                ),
                f"change the password of {doc['user']}",
            )
        return f"pull user {doc['user']} has the nodes' password again"

    # -- wrong-remote-url --------------------------------------------------------------------------------
    def _break_wrong_remote_url(self) -> dict[str, Any]:
        ups = [u for u in self.params.upstreams if u.registry != "docker.io"] or list(self.params.upstreams)
        named = {i.split("/", 1)[0] for i in self.params.verification.images}
        up = next((u for u in ups if u.registry in named), ups[0])
        with self._nexus() as http:
            doc = self._get_repo(http, "proxy", up.name)
            right = doc["proxy"]["remoteUrl"]
            wrong = _wrong_url(right)
            self._put_repo(http, "proxy", {**doc, "proxy": {**doc["proxy"], "remoteUrl": wrong}})
        return {
            "proxy": up.name,
            "remote_url": right,
            "what": f"remote URL of proxy {up.name} ({up.registry}) changed from {right} to {wrong}",
        }

    def _fix_wrong_remote_url(self, doc: dict[str, Any]) -> str:
        with self._nexus() as http:
            proxy = self._get_repo(http, "proxy", doc["proxy"])
            self._put_repo(
                http, "proxy", {**proxy, "proxy": {**proxy["proxy"], "remoteUrl": doc["remote_url"]}}
            )
        return f"remote URL of proxy {doc['proxy']} put back: {doc['remote_url']}"
