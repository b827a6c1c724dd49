"""The onboarding course's lab side: what the course notebooks (runbook_lab/course/*.ipynb) do to the lab and
read back from it.

Everything here talks to the lab's own parts as a person with curl and kubectl would: the Docker Hub
stand-in (token service, manifest requests, its lab-only /_lab/ endpoints), the Kubernetes API stand-in
(official client, the lab's kubeconfig), the Nexus emulator's REST API, the lab nodes' folders. It never
calls the runbook's product code (runbook_lib) to produce what the course then checks the runbook against;
the stages are run as a learner runs them, with the `runbook` command.

The parameters file is read as plain YAML: the lab needs a few addresses from it, not the runbook's model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

PARAMS_ENV = "RUNBOOK_PARAMS"  # what `runbook notebook --course` sets in the kernel's environment
NAMESPACE = "course"
SCALE_UP_LABEL = "course.runbook.lab/scale-up"
# Small seeded images no stage pulls, so a fresh lab node has neither cached.
SCALE_UP_IMAGES = ("docker.io/library/nginx:lab", "docker.io/library/busybox:lab")
# Docker Hub's documented probe: a HEAD of this manifest shows the headers and does not count as a pull
# (docker/docs content/manuals/docker-hub/usage/pulls.md).
PROBE_REPOSITORY, PROBE_TAG = "ratelimitpreview/test", "latest"
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
WAITING_PULL = ("ErrImagePull", "ImagePullBackOff")


class CourseError(RuntimeError):
    """The lab is not in a state the course step needs; the message says what to do."""


def notebooks_dir() -> Path:
    """The course notebooks shipped in this package."""
    return Path(__file__).resolve().parent / "course"


def default_params_file() -> Path:
    """`runbook notebook --course` names the lab's parameters file in the kernel's environment; else the
    checkout's parameters/lab.yaml (found from the working folder upwards)."""
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / "parameters" / "lab.yaml"
        if candidate.exists():
            return candidate
    raise CourseError(
        f"no lab parameters file: set {PARAMS_ENV} or start the course with `runbook notebook --course`"
    )


def _parse_ratelimit(value: str | None) -> int | None:
    """`ratelimit-remaining: 97;w=21600` -> 97 (None when the header is absent: unlimited)."""
    if not value:
        return None
    match = re.match(r"\s*(\d+)", value)
    return int(match.group(1)) if match else None


@dataclass
class Upstream:
    name: str
    registry: str
    remote_url: str
    connector_port: int | None = None
    mirror_url: str | None = None


@dataclass
class Course:
    params_file: Path
    hub_url: str  # the lab's Docker Hub (docker.io's remote_url)
    nexus_url: str
    kubeconfig: Path | None
    lab_dir: Path | None
    upstreams: list[Upstream] = field(default_factory=list)
    counters_url: str | None = None
    _api: Any = None

    @classmethod
    def from_params(cls, path: str | Path | None = None) -> Course:
        file = Path(path).resolve() if path else default_params_file()
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CourseError(f"{file}: cannot read the lab parameters ({err})") from None
        base = file.parent

        def rel(value: str | None) -> Path | None:
            return (base / value).resolve() if value else None

        upstreams = [
            Upstream(u["name"], u["registry"], u["remote_url"], u.get("connector_port"), u.get("mirror_url"))
            for u in data.get("upstreams") or []
        ]
        hub = next((u.remote_url for u in upstreams if u.registry == "docker.io"), None)
        if hub is None:
            raise CourseError(f"{file}: upstreams has no docker.io entry (the lab's Docker Hub)")
        return cls(
            params_file=file,
            hub_url=hub.rstrip("/"),
            nexus_url=str(data.get("nexus", {}).get("url", "")).rstrip("/"),
            kubeconfig=rel((data.get("kubernetes") or {}).get("kubeconfig")),
            lab_dir=rel((data.get("lab") or {}).get("dir")),
            upstreams=upstreams,
            counters_url=(data.get("verification") or {}).get("counters_url"),
        )

    # -- the lab's Docker Hub ---------------------------------------------------------------------------
    def _token(self, client: httpx.Client, repository: str) -> str:
        """An anonymous pull token, the way a client gets one: from the realm in the 401 challenge."""
        challenge = client.get(f"{self.hub_url}/v2/").headers.get("www-authenticate", "")
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            raise CourseError(
                f"{self.hub_url} sent no Bearer challenge (is the lab up? `runbook lab status`)"
            )
        resp = client.get(
            params["realm"],
            params={"service": params.get("service", ""), "scope": f"repository:{repository}:pull"},
        )
        resp.raise_for_status()
        return resp.json()["token"]

    def _manifest(
        self, method: str, repository: str = PROBE_REPOSITORY, tag: str = PROBE_TAG
    ) -> httpx.Response:
        with httpx.Client(timeout=10.0) as client:
            token = self._token(client, repository)
            return client.request(
                method,
                f"{self.hub_url}/v2/{repository}/manifests/{tag}",
                headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT},
            )

    def manifest_head(self) -> httpx.Response:
        """A HEAD of Docker Hub's probe manifest with an anonymous token: the answer a person reads."""
        return self._manifest("HEAD")

    def ratelimit(self) -> dict[str, Any]:
        """Docker Hub's rate-limit headers for this machine's address, read with a HEAD (not a pull)."""
        resp = self._manifest("HEAD")
        return {
            "status": resp.status_code,
            "ratelimit-limit": resp.headers.get("ratelimit-limit"),
            "ratelimit-remaining": resp.headers.get("ratelimit-remaining"),
            "docker-ratelimit-source": resp.headers.get("docker-ratelimit-source"),
            "remaining": _parse_ratelimit(resp.headers.get("ratelimit-remaining")),
        }

    def use_up_budget(self, leave: int = 0) -> int:
        """Pull (manifest GET) the probe image until `leave` pulls remain: what the other machines behind
        the same NAT gateway do to the shared budget all day. Returns the pulls spent."""
        spent = 0
        while True:
            remaining = self.ratelimit()["remaining"]
            if remaining is None:
                raise CourseError("the lab's Docker Hub has no rate limit set (no ratelimit headers)")
            if remaining <= leave:
                return spent
            with httpx.Client(timeout=10.0) as client:
                token = self._token(client, PROBE_REPOSITORY)
                for _ in range(remaining - leave):
                    resp = client.get(
                        f"{self.hub_url}/v2/{PROBE_REPOSITORY}/manifests/{PROBE_TAG}",
                        headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT},
                    )
                    if resp.status_code == 429:
                        return spent
                    spent += 1

    def reset_budget(self) -> dict[str, Any]:
        """The lab-only reset of this address's window (on Docker Hub: wait up to 6 hours)."""
        source = self.ratelimit()["docker-ratelimit-source"]
        resp = httpx.post(f"{self.hub_url}/_lab/ratelimit/reset", json={"source": source}, timeout=10.0)
        resp.raise_for_status()
        return self.ratelimit()

    def hub_counters(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.hub_url}/_lab/state", timeout=10.0).json().get("counters", {}))

    # -- the lab's Kubernetes API -----------------------------------------------------------------------
    def core(self) -> Any:
        from kubernetes import client, config

        if self._api is None:
            if self.kubeconfig is None or not self.kubeconfig.exists():
                raise CourseError(f"no kubeconfig at {self.kubeconfig}: start the lab (`runbook lab up`)")
            self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        return client.CoreV1Api(self._api)

    def ready_nodes(self) -> list[str]:
        names = []
        for node in self.core().list_node().items:
            conditions = {c.type: c.status for c in (node.status.conditions or [])}
            unschedulable = any(t.effect == "NoSchedule" for t in (node.spec.taints or []))
            if conditions.get("Ready") == "True" and not unschedulable:
                names.append(node.metadata.name)
        return sorted(names)

    def scale_up(self, pods: int = 6, images: tuple[str, ...] = SCALE_UP_IMAGES) -> list[str]:
        """`pods` Pods across the Ready lab nodes (round robin, bound by name: the lab has no scheduler
        to size), each pulling one of `images` as a Deployment's replicas would. Returns their names."""
        from kubernetes.client.exceptions import ApiException

        nodes = self.ready_nodes()
        if not nodes:
            raise CourseError("no Ready lab node: `runbook lab up` as root starts Karpenter and its nodes")
        core = self.core()
        try:
            core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        except ApiException as err:
            if err.status != 409:
                raise
        self.clean_up()
        names = []
        for i in range(pods):
            name = f"scale-{i + 1}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": {SCALE_UP_LABEL: "true"}},
                "spec": {
                    "nodeName": nodes[i % len(nodes)],
                    "restartPolicy": "Never",
                    "containers": [{"name": "app", "image": images[i % len(images)]}],
                },
            }
            core.create_namespaced_pod(NAMESPACE, body)
            names.append(name)
        return names

    def _scale_pods(self) -> list[Any]:
        pods = self.core().list_namespaced_pod(NAMESPACE, label_selector=f"{SCALE_UP_LABEL}=true").items
        return sorted(pods, key=lambda p: p.metadata.name)

    def pod_states(self) -> list[dict[str, str]]:
        """One row per scale-up Pod: node, image, phase, the container's waiting/terminated reason and
        message, and the Pod's last Warning event."""
        events = self.core().list_namespaced_event(NAMESPACE).items
        rows = []
        for pod in self._scale_pods():
            reason, message = "", ""
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                state = cs.state
                if state and state.waiting:
                    reason, message = state.waiting.reason or "", state.waiting.message or ""
                elif state and state.terminated:
                    reason = state.terminated.reason or ""
            warnings = [
                e
                for e in events
                if e.involved_object.name == pod.metadata.name
                and e.type == "Warning"
                and "Error:" not in e.message
            ]
            rows.append(
                {
                    "pod": pod.metadata.name,
                    "node": pod.spec.node_name or "",
                    "image": pod.spec.containers[0].image,
                    "phase": (pod.status.phase if pod.status else "") or "",
                    "reason": reason,
                    "message": message,
                    "warning": warnings[-1].message if warnings else "",
                }
            )
        return rows

    def events(self, pod: str) -> list[str]:
        """`kubectl describe pod` style: `type reason: message`, oldest first."""
        items = [
            e for e in self.core().list_namespaced_event(NAMESPACE).items if e.involved_object.name == pod
        ]
        return [f"{e.type:7} {e.reason:9} {e.message}" for e in items]

    def wait_settled(self, timeout: float = 120.0) -> list[dict[str, str]]:
        """Until every scale-up Pod has pulled (Succeeded) or waits in ImagePullBackOff."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.pod_states()
            if rows and all(r["phase"] == "Succeeded" or r["reason"] == "ImagePullBackOff" for r in rows):
                return rows
            if time.monotonic() > deadline:
                return rows
            time.sleep(0.5)

    def backoff_pods(self) -> int:
        return sum(1 for r in self.pod_states() if r["reason"] in WAITING_PULL)

    def clean_up(self) -> int:
        """Delete the scale-up Pods (the kubelet confirms at once: nothing runs)."""
        pods = self._scale_pods()
        for pod in pods:
            self.core().delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)
        deadline = time.monotonic() + 30
        while self._scale_pods() and time.monotonic() < deadline:
            time.sleep(0.2)
        return len(pods)

    # -- the lab's Nexus ----------------------------------------------------------------------------------
    def _nexus_auth(self) -> tuple[str, str] | None:
        """Admin credentials from the lab's own secret store (the managed password once stage 2 set it,
        else the one Nexus generated at first start); never printed."""
        candidates = []
        if self.lab_dir is not None:
            candidates += [
                self.lab_dir / "secrets" / "nexus-admin",
                self.lab_dir / "nexus" / "data" / "admin.password",
            ]
        for path in candidates:
            if path.exists():
                auth = ("admin", path.read_text().strip())
                status = httpx.get(f"{self.nexus_url}/service/rest/v1/status/check", auth=auth, timeout=10.0)
                if status.status_code == 200:
                    return auth
        return None

    def nexus_status(self) -> int:
        """GET /service/rest/v1/status: 200 when Nexus can serve reads."""
        return httpx.get(f"{self.nexus_url}/service/rest/v1/status", timeout=10.0).status_code

    def nexus_get(self, path: str) -> Any:
        resp = httpx.get(f"{self.nexus_url}/service/rest/v1/{path}", auth=self._nexus_auth(), timeout=10.0)
        resp.raise_for_status()
        return resp.json()

    def repositories(self) -> list[dict[str, Any]]:
        """Nexus's own view of its docker repositories (GET /v1/repositories/docker/{type}/{name})."""
        rows = []
        for repo in self.nexus_get("repositories"):
            if repo.get("format") != "docker":
                continue
            rows.append(self.nexus_get(f"repositories/docker/{repo['type']}/{repo['name']}"))
        return rows

    def port_for(self, registry: str) -> int | None:
        """The connector port that serves `registry`: the docker proxy whose remote URL is that upstream's,
        or else a group it is a member of."""
        upstream = next((u for u in self.upstreams if u.registry == registry), None)
        if upstream is None:
            raise CourseError(f"{registry} is not an upstream of {self.params_file}")
        repos = self.repositories()
        proxy = next(
            (
                r
                for r in repos
                if r.get("type") == "proxy"
                and (r.get("proxy") or {}).get("remoteUrl", "").rstrip("/") == upstream.remote_url.rstrip("/")
            ),
            None,
        )
        if proxy is None:
            return None
        if (proxy.get("docker") or {}).get("httpPort"):
            return int(proxy["docker"]["httpPort"])
        for group in repos:
            if (
                group.get("type") == "group"
                and proxy["name"] in (group.get("group") or {}).get("memberNames", [])
                and (group.get("docker") or {}).get("httpPort")
            ):
                return int(group["docker"]["httpPort"])
        return None

    def active_realms(self) -> list[str]:
        return list(self.nexus_get("security/realms/active"))

    def anonymous_access(self) -> bool:
        return bool(self.nexus_get("security/anonymous").get("enabled"))

    def mirror_counters(self) -> dict[str, Any]:
        """The emulator's lab-only per-repository counters (real Nexus has none)."""
        url = self.counters_url or f"{self.nexus_url}/_lab/counters"
        return httpx.get(url, timeout=10.0).json()

    def mirror_answers(self) -> dict[str, int | str]:
        """Each upstream's mirror URL (the Ingress host stage 3 exposes): the status of its /v2/ (200 or 401
        is a registry answering), through the address `resolve:` gives the host, like curl --resolve."""
        out: dict[str, int | str] = {}
        data = yaml.safe_load(self.params_file.read_text()) or {}
        resolve = data.get("resolve") or {}
        for up in data.get("upstreams") or []:
            url = up.get("mirror_url")
            if not url:
                continue
            parts = httpx.URL(url)
            address = resolve.get(parts.host, parts.host)
            try:
                resp = httpx.get(
                    str(parts.copy_with(host=address, path="/v2/")),
                    headers={"Host": parts.netloc.decode()},
                    timeout=10.0,
                )
                out[up["registry"]] = resp.status_code
            except httpx.HTTPError as err:
                out[up["registry"]] = type(err).__name__
        return out

    # -- the lab's nodes ------------------------------------------------------------------------------------
    def node_dirs(self) -> list[Path]:
        """Folders of the lab nodes that run now (DIR/nodes/<nodeclaim>, status.json phase ready)."""
        if self.lab_dir is None:
            return []
        dirs = []
        for status in sorted((self.lab_dir / "nodes").glob("*/status.json")):
            try:
                if json.loads(status.read_text()).get("phase") == "ready":
                    dirs.append(status.parent)
            except (OSError, ValueError):
                continue
        return dirs

    def hosts_toml(self, registry: str) -> dict[str, str]:
        """The hosts.toml each running lab node has for `registry` in /etc/containerd/certs.d ('' if none)."""
        out = {}
        for folder in self.node_dirs():
            path = folder / "root" / "etc" / "containerd" / "certs.d" / registry / "hosts.toml"
            out[folder.name] = path.read_text() if path.exists() else ""
        return out

    # -- the runbook, as a learner runs it ----------------------------------------------------------------
    def runbook(self, *args: str, tail: int = 25, show: Callable[[str], None] = print) -> tuple[int, str]:
        """`runbook ARGS --params <lab file>`; prints the last `tail` lines, returns (exit code, output)."""
        argv = [sys.executable, "-m", "runbook_lib.cli", *args, "--params", str(self.params_file)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        output = proc.stdout + proc.stderr
        show(f"$ runbook {' '.join(args)} --params {self.params_file.name}   (exit {proc.returncode})")
        for line in output.splitlines()[-tail:]:
            show("  " + line)
        return proc.returncode, output

    def run_stage(self, stage: str, apply: bool = False, tail: int = 25) -> tuple[int, str]:
        return self.runbook("run", stage, *(["--apply"] if apply else []), tail=tail)

    def caught(self, fault: str, output: str) -> bool:
        """Whether a stage's output shows the message the fault table says a learner sees."""
        from runbook_lab.breakage import BY_NAME

        expected = BY_NAME[fault].message
        found = expected in output
        print(
            ("caught: " if found else "NOT caught: ")
            + f"{fault} -> stage {BY_NAME[fault].stage} says {expected!r}"
        )
        return found

    def break_fault(self, fault: str) -> tuple[int, str]:
        return self.runbook("lab", "break", fault, tail=10)

    def fix_fault(self, fault: str) -> tuple[int, str]:
        return self.runbook("lab", "fix", fault, tail=10)


def stage_of(fault: str) -> str:
    """The stage the fault table says catches `fault`."""
    from runbook_lab.breakage import BY_NAME

    return BY_NAME[fault].stage


def table(
    rows: list[dict[str, Any]], columns: tuple[str, ...] = ("pod", "node", "image", "phase", "reason")
) -> str:
    """Rows as a plain aligned table (the course prints, it needs no pandas)."""
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


# -- exercises ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    question: str
    truth: Callable[[Course], Any]  # read from the lab at the moment the answer is checked
    hint: str


EXERCISES: dict[str, Exercise] = {
    "dockerhub-remaining": Exercise(
        "How many pulls remain in the lab Docker Hub's window for this machine's address?",
        lambda c: c.ratelimit()["remaining"],
        "read the ratelimit-remaining header of a HEAD on ratelimitpreview/test (course.ratelimit())",
    ),
    "ghcr-port": Exercise(
        "Which Nexus port serves ghcr.io?",
        lambda c: c.port_for("ghcr.io"),
        "Nexus: the docker proxy whose remote URL is ghcr.io's upstream, and its HTTP connector",
    ),
    "backoff-pods": Exercise(
        "How many scale-up Pods wait in ErrImagePull or ImagePullBackOff right now?",
        lambda c: c.backoff_pods(),
        "count the Pods in namespace course whose container waits with an image-pull reason",
    ),
}


def _same(answer: Any, truth: Any) -> bool:
    if isinstance(truth, int) and not isinstance(truth, bool):
        try:
            return int(str(answer).strip()) == truth
        except ValueError:
            return False
    return str(answer).strip().lower() == str(truth).strip().lower()


def check_answer(
    exercise: str, answer: Any, course: Course | None = None, show: Callable[[str], None] = print
) -> bool:
    """Print right or wrong (with a hint) for `answer`, checked against what the lab says NOW."""
    if exercise not in EXERCISES:
        raise CourseError(f"no exercise {exercise!r}; known: {', '.join(EXERCISES)}")
    ex = EXERCISES[exercise]
    if answer is None or str(answer).strip() == "":
        show(f"no answer yet: {ex.question}")
        return False
    truth = ex.truth(course or Course.from_params())
    if _same(answer, truth):
        show(f"right: {answer} is what the lab says now. ({ex.question})")
        return True
    show(f"wrong: the lab does not say {answer}. Hint: {ex.hint}")
    return False
