"""Lab nodes: an EC2 instance's node software, as real processes in private namespaces on this machine.

A lab node is what the Karpenter simulation (karpenter.py) "boots" for a NodeClaim. `LabNode.start()`
runs `python -m runbook_lab.node run SPEC` under
`unshare --net --mount --pid --fork --kill-child=SIGKILL --propagation private` with `lo` up, so the node has

* its own network namespace: loopback, plus a veth pair to the lab's namespace with NAT (veth.py), so
  127.0.0.1:<port> inside the node is the lab's service on the same port number and every other port is
  refused; there is no default route, so anything else, the internet included, is unreachable. Where the
  kernel path cannot be set up, the reason goes to the node's log and net.json and the user-space port
  bridge (bridge.py) gives the same reachability (NodeSpec.net chooses: auto, veth or bridge);
* its own mount namespace: `DIR/root/etc/containerd` is bind-mounted at `/etc/containerd` and a node
  `/etc/hosts` at `/etc/hosts`; the host's /etc, /var, /opt, /usr/local, /root, /home and /srv are
  overlaid with a private upper layer (`DIR/overlay/...`), so whatever a userData script writes there
  stays with the node and never touches this machine (directories that hold the node's own folder are
  left shared, because the node writes its state there);
* its own PID namespace: the node process is PID 1 there, so when it ends — however it ends — the kernel
  ends everything the node started (containerd, scripts); and SIGKILL of `unshare` kills it too.

Boot sequence inside the namespaces (each step's outcome goes to DIR/status.json, output to DIR/node.log):
1. mounts as above; 2. the network: wait for the host side to wire the veth pair (DIR/net.json), or start
the node side of the port bridge when net.json says so; 3. the instance's userData as cloud-init would
run it: every `text/x-shellscript` MIME part (or a bare `#!` script) is executed for real, in order, with
its output in DIR/userdata.log — a failing part is recorded and the boot goes on, as with cloud-init;
NodeConfig (`application/node.eks.aws`), cloud-config and Karpenter's own EKS bootstrap part are skipped
with a note (the kubelet stand-in stands for bootstrap.sh / nodeadm); Bottlerocket TOML is skipped with a
note (its settings are applied by Bottlerocket's API server, which the lab does not have); 4. a real
containerd (PrivateContainerd, Debian 1.6.20) whose CRI `config_path` is
`/etc/containerd/certs.d:DIR/root/lab/certs.d` — two roots, like the EKS AMIs'
`/etc/containerd/certs.d:/etc/docker/certs.d`; 5. the kubelet stand-in (kubelet.py).

The lab's DNS: inside a node, names of the lab (params `resolve`, e.g. docker.mirror.lab.internal) and the
public registry names (registry-1.docker.io, docker.io, quay.io, ...) resolve to 127.0.0.1 through the
node's /etc/hosts. Where a real node would reach a registry over the internet, the lab points containerd
at that registry's stand-in with a hosts.toml in the SECOND config_path root, `DIR/root/lab/certs.d`,
which the lab writes and the runbook never does:
  - `registry-1.docker.io/hosts.toml`: server = the Docker Hub front (docker.io's remote_url), so the
    alias `registry-1.docker.io/library/X` pulls straight from the docker.io stand-in, bypassing the mirror;
  - `<registry>/hosts.toml` for every upstream registry (docker.io, quay.io, ...): server = its remote_url,
    which is what that name means to a node with no mirror configured ("the cluster before the runbook").
containerd looks in `/etc/containerd/certs.d` first (all candidates, `_default` included), so a hosts.toml
the runbook's userData writes there wins over the lab's entry for the same registry. A hosts.toml that
containerd rejects is ignored and the default host (`https://registry-1.docker.io` for docker.io) is used:
in the lab that name is 127.0.0.1:443, which nothing serves, so such a pull fails with "connection
refused" instead of silently reaching Docker Hub.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import email
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROTECTED_DIRS = ("/etc", "/var", "/opt", "/usr/local", "/root", "/home", "/srv")
# Names a node would look up in public DNS; inside a lab node they are 127.0.0.1 (see the module doc).
PUBLIC_REGISTRY_NAMES = (
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
    "quay.io",
    "cdn.quay.io",
    "gcr.io",
    "ghcr.io",
    "registry.k8s.io",
    "public.ecr.aws",
)
USERDATA_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERDATA_PART_TIMEOUT_S = 300
_PR_SET_PDEATHSIG = 1


class NodeError(RuntimeError):
    """A lab node failed to start; the message carries the reason and the end of its log."""


@dataclass
class NodeSpec:
    """Everything a lab node needs, written to DIR/spec.json for the node process."""

    name: str  # Kubernetes node name (the instance's private DNS name)
    dir: str  # DIR/nodes/<nodeclaim>
    user_data: str = ""  # the instance's userData as plain text (what EC2 got)
    ami_family: str = "AL2023"
    kubeconfig: str = ""
    ports: list[int] = field(default_factory=list)  # bridged lab service ports
    hosts: dict[str, str] = field(default_factory=dict)  # node /etc/hosts entries (name -> address)
    lab_certs: dict[str, str] = field(default_factory=dict)  # lab DNS: registry namespace -> server URL
    labels: dict[str, str] = field(default_factory=dict)  # kubelet --node-labels
    taints: list[dict[str, str]] = field(default_factory=list)  # kubelet --register-with-taints
    provider_id: str = ""
    internal_ip: str = "127.0.0.1"
    instance_type: str = "m5.large"
    capacity: dict[str, str] = field(
        default_factory=lambda: {"cpu": "2", "memory": "7910Mi", "pods": "29", "ephemeral-storage": "20Gi"}
    )
    kubelet_version: str = "v1.33.5-eks-lab"
    userdata_env: dict[str, str] = field(default_factory=dict)
    heartbeat_s: float = 10.0
    image_maximum_gc_age_s: float = 0.0  # kubelet imageMaximumGCAge; 0 = off (the kubelet's default)
    bridge_dir: str = ""  # default DIR/br
    net: str = "auto"  # veth (kernel path), bridge (user-space), auto = veth, else bridge with the reason

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def bridge_path(self) -> Path:
        return Path(self.bridge_dir) if self.bridge_dir else self.path / "br"

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def lab_certs_dir(self) -> Path:
        return self.root / "lab" / "certs.d"

    def save(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / "spec.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: Path) -> NodeSpec:
        return cls(**json.loads(Path(path).read_text()))


# -- userData ----------------------------------------------------------------------------------------
@dataclass
class UserDataPart:
    index: int
    content_type: str
    body: str
    run: bool
    note: str = ""


def _looks_like_toml_settings(text: str) -> bool:
    import tomllib

    try:
        return "settings" in tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


def _is_yaml_mapping(text: str) -> bool:
    import yaml

    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


def _classify(index: int, content_type: str, body: str) -> UserDataPart:
    if content_type == "text/x-shellscript":
        if "/etc/eks/bootstrap.sh" in body:
            return UserDataPart(
                index,
                content_type,
                body,
                False,
                "Karpenter's EKS bootstrap part: the lab node's kubelet stand-in takes its place",
            )
        return UserDataPart(index, content_type, body, True)
    if content_type == "application/node.eks.aws":
        return UserDataPart(
            index,
            content_type,
            body,
            False,
            "nodeadm NodeConfig: not applied (no nodeadm); the lab node's containerd config is the lab's",
        )
    if content_type == "text/cloud-config":
        return UserDataPart(index, content_type, body, False, "cloud-config: not applied by the lab node")
    return UserDataPart(index, content_type, body, False, f"{content_type}: not a script; skipped")


def user_data_parts(text: str, ami_family: str = "AL2023") -> list[UserDataPart]:
    """The parts of an instance's userData and whether the lab node runs each (see the module doc)."""
    stripped = text.lstrip()
    if not stripped:
        return []
    if ami_family == "Bottlerocket" or (
        not stripped.startswith(("MIME-Version:", "Content-Type:", "#!"))
        and _looks_like_toml_settings(stripped)
    ):
        return [
            UserDataPart(
                1,
                "application/toml",
                text,
                False,
                "Bottlerocket settings (TOML): applied by Bottlerocket's API server, which the lab "
                "node does not have; skipped",
            )
        ]
    if stripped.startswith(("MIME-Version:", "Content-Type:")):
        message = email.message_from_string(stripped, policy=email.policy.compat32)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            body = (
                payload.decode("utf-8", errors="replace")
                if isinstance(payload, bytes)
                else str(payload or "")
            )
            parts.append(_classify(len(parts) + 1, part.get_content_type(), body))
        return parts
    if stripped.startswith("#!"):
        return [_classify(1, "text/x-shellscript", text)]
    if _is_yaml_mapping(stripped):
        return [_classify(1, "application/node.eks.aws", text)]
    return [UserDataPart(1, "text/plain", text, False, "neither a script nor MIME; skipped")]


def run_user_data(spec: NodeSpec, log_path: Path) -> list[dict[str, Any]]:
    """Run the runnable parts in order, like cloud-init's scripts-user: executed directly (so a `#!` line such
    as `#!/bin/bash -xe` counts), as root, from /, with cloud-init's PATH; a failure does not stop the
    rest."""
    results = []
    scripts = spec.path / "userdata"
    scripts.mkdir(parents=True, exist_ok=True)
    env = {"PATH": USERDATA_PATH, "HOME": "/root", "LANG": "C.UTF-8", **spec.userdata_env}
    with open(log_path, "a", encoding="utf-8") as log:
        for part in user_data_parts(spec.user_data, spec.ami_family):
            row: dict[str, Any] = {
                "part": part.index,
                "content_type": part.content_type,
                "run": part.run,
                "note": part.note,
            }
            if not part.run:
                log.write(f"--- part {part.index} ({part.content_type}) skipped: {part.note}\n")
                results.append(row)
                continue
            script = scripts / f"part-{part.index:03d}"
            script.write_text(part.body, encoding="utf-8")
            script.chmod(0o700)
            argv = [str(script)] if part.body.startswith("#!") else ["bash", str(script)]
            log.write(f"--- part {part.index} ({part.content_type}) running {' '.join(argv)}\n")
            log.flush()
            started = time.monotonic()
            try:
                done = subprocess.run(
                    argv,
                    cwd="/",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=USERDATA_PART_TIMEOUT_S,
                )
                row["exit_code"] = done.returncode
            except subprocess.TimeoutExpired:
                row["exit_code"] = None
                row["note"] = f"timed out after {USERDATA_PART_TIMEOUT_S} s"
            except OSError as exc:
                row["exit_code"] = None
                row["note"] = f"could not run: {exc}"
            row["seconds"] = round(time.monotonic() - started, 3)
            log.write(
                f"--- part {part.index} exit {row['exit_code']} after {row['seconds']} s {row['note']}\n"
            )
            log.flush()
            results.append(row)
    return results


# -- files the lab writes for a node (host side) -----------------------------------------------------
def hosts_file(entries: dict[str, str]) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{address} {name}" for name, address in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def write_lab_certs(certs_dir: Path, servers: dict[str, str]) -> None:
    """The lab's DNS stand-in: <namespace>/hosts.toml with `server` only, plus the empty `[host]` table
    without which containerd below 2.0 ignores a file that has no host entries (containerd issue #10027).
    Written by the lab itself, not with the runbook's renderer, which the lab nodes are there to check."""
    for namespace, server in sorted(servers.items()):
        doc = (
            f"# containerd registry hosts for {namespace}: lab DNS stand-in, "
            "written by the lab (not the runbook)\n"
            f"server = {json.dumps(server)}\n\n[host]\n"
        )
        target = certs_dir / namespace / "hosts.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(doc)
        tmp.replace(target)


def prepare_node_dir(spec: NodeSpec) -> None:
    root = spec.root
    (root / "etc" / "containerd" / "certs.d").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hosts").write_text(hosts_file(spec.hosts))
    spec.lab_certs_dir.mkdir(parents=True, exist_ok=True)
    write_lab_certs(spec.lab_certs_dir, spec.lab_certs)


# -- inside the node: mounts, reaping, status ------------------------------------------------------------
def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def overlay_targets(keep_shared: list[Path]) -> list[str]:
    """The protected host dirs that can be overlaid: existing, and not holding a path that must stay
    shared."""
    targets = []
    for d in PROTECTED_DIRS:
        p = Path(d)
        if not p.is_dir() or p.is_symlink():
            continue
        if any(_is_within(Path(os.path.realpath(k)), Path(os.path.realpath(p))) for k in keep_shared):
            continue
        targets.append(d)
    return targets


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NodeError(f"mount {' '.join(args)} failed: {done.stderr.strip()}")


def setup_mounts(spec: NodeSpec) -> list[str]:
    """Overlays over the protected dirs, then the node's /etc/containerd and /etc/hosts (bind mounts)."""
    overlaid = []
    for target in overlay_targets(
        [spec.path, spec.bridge_path, Path(spec.kubeconfig).parent if spec.kubeconfig else spec.path]
    ):
        layer = spec.path / "overlay" / target.strip("/").replace("/", "_")
        (layer / "upper").mkdir(parents=True, exist_ok=True)
        (layer / "work").mkdir(parents=True, exist_ok=True)
        _mount(
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={target},upperdir={layer / 'upper'},workdir={layer / 'work'}",
            target,
        )
        overlaid.append(target)
    etc_containerd = Path("/etc/containerd")
    if not etc_containerd.is_dir():
        if "/etc" not in overlaid:
            raise NodeError("/etc/containerd does not exist and /etc could not be overlaid to create it")
        etc_containerd.mkdir(parents=True)
    _mount("--bind", str(spec.root / "etc" / "containerd"), str(etc_containerd))
    _mount("--bind", str(spec.root / "etc" / "hosts"), "/etc/hosts")
    return overlaid


class StatusFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"phase": "starting", "pid": os.getpid()}

    def set(self, phase: str, **extra: Any) -> None:
        self.data.update(phase=phase, at=time.time(), **extra)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _reap_orphans(stop: threading.Event, own: set[int]) -> None:
    """As PID 1 of the node's PID namespace, collect zombies of orphans (e.g. a script's background job)."""
    while not stop.wait(2.0):
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in own:
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == "Z" and stat[1] == "1":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry), os.WNOHANG)


NET_MODES = ("auto", "veth", "bridge")
NET_WAIT_S = 30.0


def wait_network(spec: NodeSpec, stop: threading.Event) -> dict[str, Any]:
    """Inside the node: the host side's DIR/net.json, written once it has wired this namespace."""
    path = spec.path / "net.json"
    deadline = time.monotonic() + NET_WAIT_S
    while not stop.is_set():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise NodeError(f"the lab did not wire the node's network within {NET_WAIT_S:.0f} s")
        time.sleep(0.01)
    raise NodeError("stopped while waiting for the network")


def run(spec_path: Path) -> int:
    """The node process: boot (see the module doc), then serve until SIGTERM; exit 1 when the boot fails."""
    from runbook_lab.bridge import NodeSide
    from runbook_lab.containerd import CRI_PLUGIN, PrivateContainerd

    spec = NodeSpec.load(spec_path)
    status = StatusFile(spec.path / "status.json")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bridge = ctd = kubelet = cri = api = None
    code = 0
    try:
        status.set("mounting")
        overlaid = setup_mounts(spec)
        status.set("network", overlaid=overlaid)
        net = wait_network(spec, stop)
        if net.get("mode") == "bridge":
            bridge = NodeSide(spec.bridge_path, spec.ports).start()
            print(f"node {spec.name}: network: port bridge ({net.get('reason', 'chosen')})", flush=True)
        else:
            print(
                f"node {spec.name}: network: veth {net.get('node_if')} {net.get('node_addr')} -> "
                f"{net.get('lab_if')} {net.get('lab_addr')}, ports {net.get('ports')}",
                flush=True,
            )
        status.set("userdata", net=net.get("mode"))
        results = run_user_data(spec, spec.path / "userdata.log")
        status.set("containerd", userdata=results)
        config_path = f"/etc/containerd/certs.d:{spec.lab_certs_dir}"
        ctd = PrivateContainerd(
            spec.path / "ctd",
            Path("/etc/containerd/certs.d"),
            extra_config={"plugins": {CRI_PLUGIN: {"registry": {"config_path": config_path}}}},
        )
        ctd.start()
        if not ctd.cri_loaded():
            raise NodeError("containerd started without its CRI plugin:\n" + ctd.log_tail())
        reaper_known = {os.getpid()}
        if ctd.pid:
            reaper_known.add(ctd.pid)
        threading.Thread(target=_reap_orphans, args=(stop, reaper_known), daemon=True).start()
        status.set("kubelet", containerd_pid=ctd.pid)
        kubelet, cri, api = _start_kubelet(spec, str(ctd.socket), ctd.log_path)
        status.set("ready", node=spec.name)
        print(f"node {spec.name}: ready", flush=True)
        stop.wait()
    except Exception as exc:
        code = 1
        traceback.print_exc()
        status.set("failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        for closer in (
            kubelet.stop if kubelet else None,
            cri.close if cri else None,
            api.close if api else None,
            ctd.stop if ctd else None,
            bridge.stop if bridge else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer()
        if code == 0:
            status.set("stopped")
        sys.stdout.flush()
    return code


# containerd's fs applier logs every layer it applies, at debug level (containerd diff/apply/apply.go:
# `log.G(ctx).WithFields(... "d": time.Since(t1) ...).Debugf("diff applied")`); the node's containerd runs
# at debug level, so the log says how long a pull spent unpacking, apart from fetching content.
_DIFF_APPLIED = re.compile(r'msg="diff applied".*?\bd="?((?:[0-9.]+(?:ns|µs|us|ms|s|m|h))+)')
_GO_PART = re.compile(r"([0-9.]+)(ns|µs|us|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def unpack_seconds(log_text: str) -> tuple[float, int]:
    """Sum of the "diff applied" durations in containerd log text, and the number of layers they cover."""
    found = [
        sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(d)) for d in _DIFF_APPLIED.findall(log_text)
    ]
    return sum(found), len(found)


class UnpackMeter:
    """How long containerd spent unpacking between mark() and since(): for one pull at a time, which is
    how the kubelet pulls (serializeImagePulls)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = Path(log_path)

    def mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def since(self, mark: int) -> float | None:
        """Unpack seconds logged since `mark`; None when no layer was applied (nothing to report)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(mark)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        total, layers = unpack_seconds(text)
        return total if layers else None


def _start_kubelet(spec: NodeSpec, socket_path: str, log_path: Path | None = None) -> tuple[Any, Any, Any]:
    from kubernetes import config as kube_config

    from runbook_lab.cri import CRIImageClient
    from runbook_lab.kubelet import Kubelet, KubeletConfig

    api = kube_config.new_client_from_config(config_file=spec.kubeconfig)
    cri = CRIImageClient(socket_path, timeout=600)
    cfg = KubeletConfig(
        node_name=spec.name,
        cri_socket=socket_path,
        labels=spec.labels,
        taints=spec.taints,
        provider_id=spec.provider_id,
        internal_ip=spec.internal_ip,
        capacity=spec.capacity,
        kubelet_version=spec.kubelet_version,
        heartbeat_s=spec.heartbeat_s,
        image_maximum_gc_age_s=spec.image_maximum_gc_age_s,
    )
    meter = UnpackMeter(log_path) if log_path else None
    kubelet = Kubelet(cfg, api, cri, log=lambda line: print(line, flush=True), unpack_meter=meter).start()
    return kubelet, cri, api


# -- host side ---------------------------------------------------------------------------------------
def _set_parent_death_signal() -> None:
    # runs in the child between fork and exec: if the process (thread) that started the node dies, the
    # kernel SIGKILLs `unshare`, whose --kill-child then takes the whole node down
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class LabNode:
    """Host-side handle of one lab node: prepares its folder, runs the lab side of its port bridge, starts the
    node process in its namespaces, reports readiness, and stops everything by PID.

    Start it from a thread that outlives the node: the node is tied to that thread with PR_SET_PDEATHSIG.
    """

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_pid: int | None = None  # the node process (PID 1 of the node's PID namespace), host view
        self._lab_side: Any = None
        self._veth: Any = None
        self.net: dict[str, Any] = {}  # what net.json says: mode veth (addresses) or bridge (reason)

    @property
    def dir(self) -> Path:
        return self.spec.path

    @property
    def log_path(self) -> Path:
        return self.dir / "node.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "status.json").read_text())
        except (OSError, ValueError):
            return {"phase": "starting" if self.running else "not started"}

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.log_path, self.dir / "userdata.log", self.dir / "ctd" / "containerd.log"):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            chunks.append(f"== {path.name} ==\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log)"

    def start(self) -> LabNode:
        if self.spec.net not in NET_MODES:
            raise NodeError(f"net: {self.spec.net!r} is not one of {', '.join(NET_MODES)}")
        for tool in ("unshare", "ip", "mount"):
            if not shutil.which(tool):
                raise NodeError(f"{tool!r} not found on PATH (Debian packages util-linux, iproute2, mount)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in ("status.json", "net.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / stale).unlink()
        prepare_node_dir(self.spec)
        spec_path = self.spec.save()
        argv = [
            "unshare",
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGKILL",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "runbook_lab.node",
            "run",
            str(spec_path),
        ]
        env = {
            k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        (self.dir / "pid").write_text(json.dumps({"unshare": self.proc.pid}))
        deadline = time.monotonic() + 10
        while self.node_pid is None and time.monotonic() < deadline and self.running:
            kids = _children(self.proc.pid)
            if kids:
                self.node_pid = kids[0]
                (self.dir / "pid").write_text(json.dumps({"unshare": self.proc.pid, "node": self.node_pid}))
                break
            time.sleep(0.01)
        if self.node_pid is not None:
            try:
                self._wire()
            except BaseException:
                # the node may not have its SIGTERM handler yet, and PID 1 of a PID namespace ignores
                # unhandled signals: do not wait long before the SIGKILL
                self.stop(timeout=1.0)
                raise
        return self

    def _wire(self) -> None:
        """The node's network (the node waits for net.json): the kernel path, else the bridge with the
        reason."""
        from runbook_lab.bridge import LabSide
        from runbook_lab.veth import VethError, connect

        net: dict[str, Any] = {"mode": "bridge", "reason": "NodeSpec.net is bridge"}
        if self.spec.net != "bridge":
            try:
                assert self.node_pid is not None
                self._veth = connect(self.node_pid, self.spec.ports)
                net = self._veth.describe()
            except VethError as exc:
                if self.spec.net == "veth":
                    raise NodeError(f"lab node {self.spec.name}: kernel network path failed: {exc}") from None
                net = {"mode": "bridge", "reason": f"kernel path unavailable: {exc}"}
        if net["mode"] == "bridge":
            self._lab_side = LabSide(self.spec.bridge_path, self.spec.ports).start()
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"lab: node network falls back to the port bridge: {net['reason']}\n")
        self.net = net
        target = self.dir / "net.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(net, indent=1))
        tmp.replace(target)

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.get("phase") == "ready":
                return st
            if st.get("phase") == "failed" or not self.running:
                raise NodeError(
                    f"lab node {self.spec.name} failed to start ({st.get('error', st.get('phase'))}); "
                    f"last log lines:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise NodeError(
                    f"lab node {self.spec.name} not ready after {timeout:.0f} s "
                    f"(phase {st.get('phase')}); last log lines:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the node process (it stops kubelet, containerd and the bridge), wait, SIGKILL as a
        fallback, then remove the lab side of its network (veth rules or bridge sockets).
        The node's mounts live only in its mount namespace, which goes with its last process."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if self.node_pid and _alive(self.node_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.node_pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # --kill-child: the node's PID 1 gets SIGKILL, and with it every process inside
                proc.wait(timeout=10)
        if self._veth is not None:
            self._veth.close()  # the pair went with the node's namespace; this removes the lab-side rules
            self._veth = None
        if self._lab_side is not None:
            self._lab_side.stop()
            self._lab_side = None
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "pid").unlink()

    def discard_disk(self) -> None:
        """After stop(): drop what a terminated instance loses with its disk (containerd's content and
        snapshots,
        the overlays, the node root, the bridge sockets, the userData parts); keep the logs, spec and
        status."""
        if self.running:
            raise NodeError("stop the node first")
        discard_disk(self.dir)

    def exec_argv(self, argv: list[str]) -> list[str]:
        """Command line that runs `argv` inside this node's network and mount namespaces (nsenter)."""
        if not self.node_pid:
            raise NodeError("the node is not running")
        return ["nsenter", "-t", str(self.node_pid), "-n", "-m", "--", *argv]

    def node_path(self, path: str) -> Path:
        """Where a file the node wrote at `path` (e.g. /etc/x) is on this machine (overlay upper or bind
        source)."""
        p = Path(path)
        if _is_within(p, Path("/etc/containerd")):
            return self.spec.root / "etc" / "containerd" / p.relative_to("/etc/containerd")
        for target in PROTECTED_DIRS:
            if _is_within(p, Path(target)):
                layer = self.dir / "overlay" / target.strip("/").replace("/", "_") / "upper"
                return layer / p.relative_to(target)
        return p

    def __enter__(self) -> LabNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def discard_disk(node_dir: Path) -> None:
    """What an instance loses with its disk, in a stopped node's folder (see LabNode.discard_disk)."""
    for sub in ("ctd", "overlay", "root", "br", "userdata"):
        shutil.rmtree(Path(node_dir) / sub, ignore_errors=True)


def stop_stale(nodes_dir: Path) -> list[int]:
    """Stop node processes recorded under `nodes_dir` by an earlier run that ended without stopping them,
    then remove the lab-side veth rules of node interfaces that are gone (veth.sweep)."""
    stopped = []
    for pid_file in Path(nodes_dir).glob("*/pid"):
        try:
            pids = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        ours = {}
        for key in ("node", "unshare"):
            pid = pids.get(key)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if _alive(pid) else b""
            except OSError:
                cmdline = b""
            if b"runbook_lab.node" in cmdline:  # else gone, or the PID now belongs to something else
                ours[key] = pid
        if "node" in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ours["node"], signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(ours["node"]) and time.monotonic() < deadline:
                time.sleep(0.1)
        for pid in ours.values():
            if _alive(pid):
                # SIGKILL of unshare reaches the node through --kill-child; the node's PID 1 takes the rest
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        stopped.extend(ours.values())
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    from runbook_lab.veth import sweep

    sweep()
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runbook_lab.node",
        description="The process of one lab node (started by LabNode, inside its namespaces)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="boot the node described by SPEC and serve until SIGTERM")
    run_p.add_argument("spec", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.spec)
    return 2


if __name__ == "__main__":
    sys.exit(main())
