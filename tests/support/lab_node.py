"""Shared kit for the lab node, kubelet and Karpenter-simulation tests; not a test module itself.

Real parts only: a CNCF distribution registry seeded with the lab images behind the Docker Hub front (the
docker.io stand-in), a distribution pull-through mirror in front of that registry, the Kubernetes API
stand-in in-process, and moto in-process. Node folders live under a short /tmp path because containerd's
and the bridge's Unix socket paths must fit in 108 bytes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.containerd.hosts import HostsToml, MirrorHost

PULLED = (
    r'^Successfully pulled image "(?P<image>[^"]+)" in (?P<pull>[0-9.]+(ms|s)) '
    r"\((?P<total>[0-9.]+(ms|s)) including waiting\)\. Image size: (?P<size>\d+) bytes\.$"
)


def short_tmp(prefix: str = "ln") -> Iterator[Path]:
    """A short folder under /tmp, removed afterwards (a generator for fixtures; `short_dir` for `with`)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


short_dir = contextlib.contextmanager(short_tmp)


@dataclass
class Registries:
    registry: Any  # RegistryProcess: the docker.io stand-in's storage
    hub: Any  # DockerHub front (registry-1.docker.io behaviour)
    mirror: Any  # distribution pull-through cache of the registry

    def mirror_requests(self) -> list[str]:
        """Access-log lines of the mirror for requests made by containerd (user agent containerd/...)."""
        text = Path(self.mirror.log_path).read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if 'useragent="containerd/' in line and "response completed" in line
        ]

    def hub_counters(self) -> dict[str, int]:
        return dict(self.hub.state()["counters"])


def registries_fixture(tmp_path_factory: Any) -> Iterator[Registries]:
    from runbook_lab.dockerhub import DockerHub
    from runbook_lab.images import seed_lab_images
    from runbook_lab.registries import start_registry, stop_process

    tmp = tmp_path_factory.mktemp("registries")
    reg = start_registry("docker.io", tmp / "reg", 0, tmp / "reg.log")
    hub = mirror = None
    try:
        seed_lab_images({"docker.io": reg.url}, tmp / "img", image_mb=1, multilayer_mb=4)
        hub = DockerHub(reg.url).start()
        mirror = start_registry("mirror", tmp / "mirror", 0, tmp / "mirror.log", proxy_remote=reg.url)
        yield Registries(reg, hub, mirror)
    finally:
        if mirror is not None:
            stop_process(mirror)
        if hub is not None:
            hub.stop()
        stop_process(reg)


def moto_fixture() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per AWS call otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def mirror_user_data(mirror_url: str, upstream_url: str, marker: str = "runbook") -> str:
    """A MIME userData whose shell part writes docker.io's hosts.toml atomically (rendered by the runbook's
    own
    renderer) and a marker file, as a stage-4 userData would; plus a NodeConfig part the node must skip."""
    toml = HostsToml("docker.io", upstream_url, [MirrorHost(mirror_url)]).render()
    return f"""MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash
set -eu
dir=/etc/containerd/certs.d/docker.io
mkdir -p "$dir" /etc/lab-node
tmp=$(mktemp "$dir/.hosts.XXXXXX")
cat > "$tmp" <<'TOML'
{toml}TOML
mv -f "$tmp" "$dir/hosts.toml"
echo {marker} > /etc/lab-node/marker
--BOUNDARY
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  kubelet:
    config:
      maxPods: 29
--BOUNDARY--
"""


def pod(
    name: str,
    image: str,
    node: str | None = None,
    policy: str | None = "Always",
    namespace: str = "default",
    init_image: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "pull", "image": image}
    if policy:
        container["imagePullPolicy"] = policy
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if node:
        spec["nodeName"] = node
    if init_image:
        spec["initContainers"] = [{"name": "init", "image": init_image, "imagePullPolicy": "Always"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def events_of(kube: Any, name: str, namespace: str = "default") -> list[dict[str, Any]]:
    return sorted(
        (e for e in kube.list("v1", "Event", namespace) if e["involvedObject"].get("name") == name),
        key=lambda e: e["metadata"]["name"],
    )


def pod_phase(kube: Any, name: str, namespace: str = "default") -> str | None:
    obj = kube.get("v1", "Pod", name, namespace)
    return (obj.get("status") or {}).get("phase") if obj else None


def pids_alive(*pids: int | None) -> list[int]:
    alive = []
    for pid in pids:
        if not pid:
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def host_mounts_under(path: Path) -> list[str]:
    """Mount points of THIS (the test's) mount namespace at or below `path`: a node's mounts must never be
    here."""
    base = str(Path(path).resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(base)]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
