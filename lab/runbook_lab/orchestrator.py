"""`runbook lab up|down|status`: start, stop and show the built-in lab.

Every component is a separate background process (so `down` can stop exactly what `up` started, by
PID) whose ports come from the lab parameters file, the one source of truth. `DIR/state.json` records
each process (pid, command, ports, log). A port taken by something else is a clear error before anything
starts.

Lifecycle (issue #11):
* `up` is idempotent: a component whose process still runs is reported ("already running"), not started
  twice; when every component runs and answers, `up` starts nothing and says so. A component that died
  (SIGKILL included) is started again by the next `up`; only it.
* `up` ends when every component answers its health URL, the ones that were already running too (after
  moto restarted, Karpenter replaces its nodes before it is ready again).
* A failing `up` stops, in reverse order, what this `up` started, and names on stderr what it stopped and
  what it left running (what was already running before it); exit status 1.
* `status` prints one row per component: up, starting/unhealthy (the process runs but does not answer its
  health URL) or down (no process: never started, stopped, or killed). Exit status 0 when every component
  is up, 1 otherwise (the CLI also names the components that are not up on stderr).
* moto keeps its state in memory, so each start of moto is an empty AWS account: right after it answers, the
  lab puts back what the account holds outside the cluster (the subnets' and security group's Karpenter
  discovery tags, the Secrets Manager secrets, the EKS cluster). EC2 instances are not put back: the lab
  nodes stopped with the lab, as the instances would have, and the Karpenter simulation garbage-collects
  the NodeClaims whose instance is gone and launches new ones (see karpenter.py).
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from runbook_lab.processes import pid_alive, port_free, stop_pid
from runbook_lib.params import RunbookParams

# The lab Docker Hub's one account (password: DIR/secrets/dockerhub, also in Secrets Manager as
# lab/dockerhub), what an upstream's `credentials` would name; anonymous pulls work as before.
DOCKERHUB_USER = "lab-hub"


class LabError(Exception):
    pass


@dataclass
class Component:
    name: str
    argv: list[str]
    ports: list[int]
    health_url: str
    healthy_codes: tuple[int, ...] = (200, 401)
    ready_timeout: float = 30.0
    pid: int | None = None
    started: float | None = None
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict:
        d = asdict(self)
        d.pop("env")
        return d


def nodes_missing() -> list[str]:
    """What lab nodes need and this machine lacks (they run real containerd in their own namespaces)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [
        f"{tool} (Debian package)"
        for tool in ("unshare", "containerd", "ctr", "ip")
        if not shutil.which(tool)
    ]
    return missing


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class Lab:
    def __init__(self, params: RunbookParams, lab_dir: Path, params_file: Path | None = None):
        if params.lab is None:
            raise LabError("the parameters have no lab section")
        self.params = params
        self.params_file = params_file
        self.cfg = params.lab
        self.dir = lab_dir
        self.state_file = lab_dir / "state.json"
        self.python = sys.executable

    # -- components ----------------------------------------------------------------------------
    def components(self) -> list[Component]:
        d, cfg, py = self.dir, self.cfg, self.python
        comps: list[Component] = []
        for host, reg in cfg.registries.items():
            comps.append(
                Component(
                    f"registry {host}",
                    ["docker-registry", "serve", str(d / "registries" / host / "config.yml")],
                    [reg.port],
                    f"http://127.0.0.1:{reg.port}/v2/",
                    (200,),
                )
            )
        if "docker.io" not in cfg.registries:
            raise LabError("lab.registries needs a docker.io stand-in behind the Docker Hub front")
        hub = cfg.dockerhub
        hub_argv = [
            py,
            "-m",
            "runbook_lab.dockerhub",
            "--port",
            str(hub.port),
            "--token-port",
            str(hub.token_port),
            "--backend",
            f"http://127.0.0.1:{cfg.registries['docker.io'].port}",
            "--limit",
            str(hub.limit),
            "--window",
            str(hub.window_s),
            "--latency-ms",
            str(hub.latency_ms),
        ]
        if hub.throttle_bytes_per_s:
            hub_argv += ["--throttle-bytes-per-s", str(hub.throttle_bytes_per_s)]
        comps.append(
            Component(
                "dockerhub", hub_argv, [hub.port, hub.token_port], f"http://127.0.0.1:{hub.port}/v2/", (401,)
            )
        )
        nexus_port = _port_of(self.params.nexus.url)
        connector_ports = sorted({u.connector_port for u in self.params.upstreams if u.connector_port})
        comps.append(
            Component(
                "nexus",
                [
                    py,
                    "-m",
                    "runbook_lab.nexus",
                    "--data-dir",
                    str(d / "nexus" / "data"),
                    "--port",
                    str(nexus_port),
                    "--version",
                    cfg.nexus.version,
                    "--edition",
                    cfg.nexus.edition,
                    "--request-log",
                    str(d / "nexus" / "requests.jsonl"),
                ],
                [nexus_port, *connector_ports],
                f"http://127.0.0.1:{nexus_port}/service/rest/v1/status",
                (200,),
            )
        )
        kubeconfig = self.params.path(self.params.kubernetes.kubeconfig) or d / "kubeconfig"
        comps.append(
            Component(
                "kube",
                [
                    py,
                    "-m",
                    "runbook_lab.kube",
                    "--port",
                    str(cfg.kube_port),
                    "--state-file",
                    str(d / "kube" / "state.json"),
                    "--kubeconfig",
                    str(kubeconfig),
                ],
                [cfg.kube_port],
                f"http://127.0.0.1:{cfg.kube_port}/version",
                (200,),
            )
        )
        # Routes the cluster's Ingress hosts to the Services' target ports (the lab's pod network);
        # healthy once it has synced Ingresses and Services from the API.
        comps.append(
            Component(
                "ingress",
                [
                    py,
                    "-m",
                    "runbook_lab.ingress",
                    "--port",
                    str(cfg.ingress_port),
                    "--kubeconfig",
                    str(kubeconfig),
                ],
                [cfg.ingress_port],
                f"http://127.0.0.1:{cfg.ingress_port}/_lab/healthz",
                (200,),
            )
        )
        comps.append(
            Component(
                "moto",
                [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(cfg.moto_port)],
                [cfg.moto_port],
                f"http://127.0.0.1:{cfg.moto_port}/moto-api/",
                (200,),
            )
        )
        if self.params_file is not None and not nodes_missing():
            # Last: it needs the API and moto, and its nodes reach every other component through the bridge.
            # Ready once every NodePool has its nodes booted (real containerd in their own namespaces).
            comps.append(
                Component(
                    "karpenter",
                    [
                        py,
                        "-m",
                        "runbook_lab.karpenter",
                        "--kubeconfig",
                        str(kubeconfig),
                        "--nodes-dir",
                        str(d / "nodes"),
                        "--aws-endpoint",
                        f"http://127.0.0.1:{cfg.moto_port}",
                        "--params",
                        str(self.params_file),
                        "--health-port",
                        str(cfg.karpenter_health_port),
                        "--image-maximum-gc-age",
                        str(cfg.image_gc_age_s),
                    ],
                    [cfg.karpenter_health_port],
                    f"http://127.0.0.1:{cfg.karpenter_health_port}/readyz",
                    (200,),
                    ready_timeout=90.0,
                )
            )
        return comps

    # -- state ---------------------------------------------------------------------------------
    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {"components": {}}

    def save_state(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def running(self) -> dict[str, dict]:
        state = self.load_state()
        return {
            name: rec
            for name, rec in state.get("components", {}).items()
            if pid_alive(rec.get("pid"), Path(rec["argv"][0]).name)
        }

    # -- up ------------------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = lambda _m: None, timeout: float = 30.0) -> list[str]:
        """Start what does not run, wait until every component answers; the names started, in order."""
        comps = self.components()
        running = self.running()
        # Refuse before starting anything if a port we need is taken by a process that is not ours.
        taken = []
        for c in comps:
            if c.name in running:
                continue
            taken += [f"{p} ({c.name})" for p in c.ports if not port_free(p)]
        if taken:
            raise LabError(
                "port(s) already in use by another process: "
                + ", ".join(taken)
                + "; stop that process or change the ports in the lab parameters file"
            )
        self._write_configs()
        state = self.load_state()
        state["components"] = dict(running)
        state["dir"] = str(self.dir)
        started: list[Component] = []
        try:
            for c in comps:
                if c.name in running:
                    progress(f"  {c.name}: already running (pid {running[c.name]['pid']})")
                    continue
                self._start(c)
                state["components"][c.name] = c.record()
                self.save_state(state)
                started.append(c)
                self._wait_ready(c, max(timeout, c.ready_timeout))
                progress(f"  {c.name}: up on port {', '.join(map(str, c.ports))} (pid {c.pid})")
                if c.name == "moto":
                    self.seed_aws()  # a fresh moto is an empty account (see the module docstring)
            if started:
                progress("  seeding images, secrets and cluster objects ...")
                self.seed()
            # What was already running must answer too: e.g. Karpenter replaces its nodes after moto
            # restarted.
            for c in comps:
                if c.name in running:
                    c.pid, c.log = running[c.name]["pid"], running[c.name].get("log", "")
                    self._wait_ready(c, max(timeout, c.ready_timeout))
        except (Exception, KeyboardInterrupt) as err:
            self._undo(state, started, running)
            message = str(err) if isinstance(err, LabError) else f"{type(err).__name__}: {err}"
            left = [c.name for c in comps if c.name in running]
            raise LabError(message + "\n" + _left_behind([c.name for c in started], left)) from None
        if nodes_missing():
            progress(
                "  karpenter + nodes: not started, lab nodes need "
                + ", ".join(nodes_missing())
                + " — stages 4 and 5 cannot prove the node path without them"
            )
        if not started:
            progress(f"  all {len(comps)} components already up; nothing started")
            return []
        state["up_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.save_state(state)
        return [c.name for c in started]

    def start_component(self, name: str, timeout: float = 30.0) -> bool:
        """Start one component that does not run (e.g. Nexus after `lab break nexus-down-at-boot`) and
        wait until it answers; False when it was running already. The others are left as they are."""
        comp = next((c for c in self.components() if c.name == name), None)
        if comp is None:
            raise LabError(f"no lab component {name!r}")
        if name in self.running():
            return False
        taken = [str(p) for p in comp.ports if not port_free(p)]
        if taken:
            raise LabError(f"{name}: port(s) {', '.join(taken)} already in use by another process")
        self._write_configs()
        self._start(comp)
        state = self.load_state()
        state.setdefault("components", {})[name] = comp.record()
        self.save_state(state)
        self._wait_ready(comp, max(timeout, comp.ready_timeout))
        return True

    def _undo(self, state: dict, started: list[Component], running: dict[str, dict]) -> None:
        """Stop, newest first, what this `up` started; keep in the state what ran before it."""
        for c in reversed(started):
            if c.pid and pid_alive(c.pid, Path(c.argv[0]).name):
                stop_pid(c.pid)
            state["components"].pop(c.name, None)
        state["components"] = {n: r for n, r in state["components"].items() if n in running}
        self.save_state(state)

    def _write_configs(self) -> None:
        from runbook_lab.registries import registry_config

        for host, reg in self.cfg.registries.items():
            root = self.dir / "registries" / host
            (root / "data").mkdir(parents=True, exist_ok=True)
            (root / "config.yml").write_text(registry_config(root / "data", reg.port))
        for sub in ("logs", "nexus/data", "kube", "secrets"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    def _start(self, c: Component) -> None:
        log = self.dir / "logs" / (c.name.replace(" ", "-") + ".log")
        c.log = str(log)
        env = {**os.environ, **c.env}
        if c.name == "dockerhub":  # the lab's Docker Hub account, for upstreams[].credentials
            from runbook_lab.dockerhub import USER_ENV

            env[USER_ENV] = f"{DOCKERHUB_USER}:{self.lab_secret('dockerhub')}"
        with open(log, "ab") as fh:
            try:
                proc = subprocess.Popen(
                    c.argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                    cwd=self.dir,
                )
            except FileNotFoundError:
                raise LabError(
                    f"{c.name}: {c.argv[0]} not found"
                    + (
                        " (install the Debian package docker-registry; `make demo` does it as root)"
                        if c.argv[0] == "docker-registry"
                        else ""
                    )
                ) from None
        c.pid = proc.pid
        c.started = time.time()

    def _wait_ready(self, c: Component, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not pid_alive(c.pid):
                raise LabError(f"{c.name} exited during start; last log lines:\n{_tail(c.log)}")
            try:
                code = httpx.get(c.health_url, timeout=2.0).status_code
                if code in c.healthy_codes:
                    return
                last = f"answered {code}"
            except httpx.HTTPError as err:
                last = type(err).__name__
            time.sleep(0.2)
        raise LabError(
            f"{c.name} did not answer {c.health_url} within {timeout:.0f} s ({last}); log: {c.log}"
        )

    # -- seeding -------------------------------------------------------------------------------
    def lab_secret(self, name: str) -> str:
        """A lab credential, generated once and kept in DIR/secrets (the lab's stand-in secret store)."""
        path = self.dir / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(pysecrets.token_urlsafe(18))
        return path.read_text().strip()

    def seed(self) -> None:
        from runbook_lab.images import seed_lab_images

        urls = {host: f"http://127.0.0.1:{reg.port}" for host, reg in self.cfg.registries.items()}
        seed_lab_images(
            urls, self.dir / "images", image_mb=self.cfg.image_mb, multilayer_mb=self.cfg.multilayer_mb
        )
        self.seed_cluster()

    def seed_cluster(self) -> None:
        """The cluster as it was before the runbook: Nexus installed by its Helm chart."""
        from runbook_lab.helm_seed import seed_helm_release
        from runbook_lib import kube

        with kube.api_client(self.params) as api:
            seed_helm_release(api, self.params)

    def seed_aws(self) -> None:
        """What the AWS account holds outside the cluster; put back after every start of moto (in memory)."""
        from runbook_lab.karpenter import Ec2
        from runbook_lib import aws

        # The discovery tags on the subnets and security group, as the Karpenter getting-started guide sets
        # them (aws/karpenter-provider-aws website/content/en/docs/getting-started); the EC2NodeClass selects
        # by them, so without them no NodeClaim can launch.
        Ec2(f"http://127.0.0.1:{self.cfg.moto_port}", self.params.aws.region).tag_discovery(
            self.params.aws.cluster_name or "lab"
        )
        sm = aws.client(self.params, "secretsmanager")
        users = {"nexus-admin": "admin", "docker-pull": "pull", "dockerhub": DOCKERHUB_USER}
        for secret_id, name in (
            ("lab/nexus-admin", "nexus-admin"),
            ("lab/docker-pull", "docker-pull"),
            ("lab/dockerhub", "dockerhub"),
        ):
            value = json.dumps({"username": users[name], "password": self.lab_secret(name)})
            try:
                sm.create_secret(Name=secret_id, SecretString=value)
            except sm.exceptions.ResourceExistsException:
                sm.put_secret_value(SecretId=secret_id, SecretString=value)
        if self.params.aws.cluster_name:
            eks = aws.client(self.params, "eks")
            try:
                eks.describe_cluster(name=self.params.aws.cluster_name)
            except eks.exceptions.ResourceNotFoundException:
                eks.create_cluster(
                    name=self.params.aws.cluster_name,
                    version="1.31",
                    roleArn="arn:aws:iam::123456789012:role/lab-eks-cluster",
                    resourcesVpcConfig={"subnetIds": ["subnet-lab-a", "subnet-lab-b"]},
                )

    # -- down / status -------------------------------------------------------------------------
    def down(self) -> list[str]:
        state = self.load_state()
        stopped = []
        # Newest dependency first (Karpenter and its nodes before the API and moto they use), whatever order
        # restarts left in the state file.
        try:
            order = [c.name for c in self.components()]
        except LabError:
            order = []
        records = state.get("components", {})
        names = sorted(records, key=lambda n: order.index(n) if n in order else len(order), reverse=True)
        for name, rec in ((n, records[n]) for n in names):
            pid = rec.get("pid")
            if pid_alive(pid, Path(rec["argv"][0]).name):
                stop_pid(pid)
                stopped.append(name)
        from runbook_lab.node import stop_stale

        stop_stale(self.dir / "nodes")  # nodes a killed Karpenter left, then gone nodes' veth rules
        state["components"] = {}
        state["down_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.state_file.exists():
            self.save_state(state)
        return stopped

    def status_rows(self) -> list[dict]:
        state = self.load_state().get("components", {})
        rows = []
        for c in self.components():
            rec = state.get(c.name)
            alive = bool(rec) and pid_alive(rec.get("pid"), Path(c.argv[0]).name)
            answering = False
            if alive:
                try:
                    answering = httpx.get(c.health_url, timeout=2.0).status_code in c.healthy_codes
                except httpx.HTTPError:
                    answering = False
            rows.append(
                {
                    "component": c.name,
                    "pid": rec.get("pid") if alive else "",
                    "ports": ",".join(map(str, c.ports)),
                    "state": "up" if answering else ("starting/unhealthy" if alive else "down"),
                    "url": c.health_url,
                }
            )
        return rows

    def healthy(self) -> bool:
        return all(r["state"] == "up" for r in self.status_rows())

    def status_table(self, rows: list[dict] | None = None) -> str:
        rows = self.status_rows() if rows is None else rows
        cols = ["component", "state", "pid", "ports", "url"]
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
        return "\n".join(lines)


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _left_behind(stopped: list[str], left: list[str]) -> str:
    said = (
        f"stopped what this `lab up` had started: {', '.join(stopped)}"
        if stopped
        else "this `lab up` had started nothing"
    )
    kept = (
        f"left running (already running before): {', '.join(left)}"
        if left
        else "nothing of the lab is left running"
    )
    return f"{said}; {kept}"
