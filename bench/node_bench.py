"""Lab node path: warm mirror vs direct, as containerd on a lab node pulls (issue #15).

One real lab node (runbook_lab.node: its own namespaces, real containerd 1.6 with CRI) pulls the lab's
50 MiB image over CRI PullImage, the call a kubelet makes:
- ``direct``: `registry-1.docker.io/library/big:lab`, which the lab's DNS points at the Docker Hub stand-in,
  throttled to 20 MB/s like an internet upstream;
- ``mirror-warm``: `docker.io/library/big:lab` through the node's docker.io hosts.toml (rendered by the
  runbook's own renderer) to a distribution pull-through mirror of that Hub, warmed by one cold pull first.
Before every pull the image is removed (CRI RemoveImage; containerd's garbage collection then drops its
content and snapshots), so each pull transfers and unpacks the whole image.

Unpack is reported separately: containerd's fs applier logs each layer it applies at debug level
(``msg="diff applied" d=<duration>``, containerd diff/apply/apply.go) and the node's containerd runs at
debug level, so the unpack of a pull is the sum of those durations in the log lines it wrote during the
pull; transfer = pull - unpack (resolve, content fetch into the content store, and the image record).
The figure compares transfer medians, which is what the mirror changes; the totals are in the details.

The node path is measured both ways in the same run, kernel (veth + NAT, runbook_lab.veth) and the old
user-space port bridge, so the details show what the kernel path bought. Everything runs in a private
network namespace (`python -m bench.node_bench --inner OUT WORK`), so the bench's veth pairs and iptables
rules never touch this machine's own namespace.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, Figure, ratio, run

IMAGE_MB = 50
THROTTLE_BYTES_PER_S = 20_000_000
REPETITIONS = 3
TARGET = 5.0
MIRRORED = "docker.io/library/big:lab"
DIRECT = "registry-1.docker.io/library/big:lab"
NAME = "lab node path, warm mirror vs direct"


# -- inside the private network namespace ------------------------------------------------------------
def _user_data(mirror_url: str, hub_url: str) -> str:
    from runbook_lib.containerd.hosts import HostsToml, MirrorHost

    toml = HostsToml("docker.io", hub_url, [MirrorHost(mirror_url)]).render()
    return (
        "#!/bin/sh\nset -eu\nmkdir -p /etc/containerd/certs.d/docker.io\n"
        f"cat > /etc/containerd/certs.d/docker.io/hosts.toml <<'TOML'\n{toml}TOML\n"
    )


def _pull(cri: Any, ctd_log: Path, image: str) -> dict[str, float]:
    from runbook_lab.node import unpack_seconds  # containerd's "diff applied" durations (module doc)

    for name in (MIRRORED, DIRECT):
        if cri.status(name) is not None:
            cri.remove(name)
    time.sleep(0.2)  # containerd's GC of the removed content runs just after RemoveImage returns
    offset = ctd_log.stat().st_size
    _, pull_s = cri.pull(image)
    time.sleep(0.05)  # the last log line reaches the file
    with open(ctd_log, "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace")
    unpack_s, layers = unpack_seconds(text)
    return {"pull_s": pull_s, "unpack_s": unpack_s, "transfer_s": pull_s - unpack_s, "layers": layers}


def _node_samples(base: Path, net: str, ports: list[int], kubeconfig: Path, urls: dict[str, str]) -> dict:
    from runbook_lab.cri import CRIImageClient
    from runbook_lab.node import LabNode, NodeSpec

    spec = NodeSpec(
        name=f"ip-10-0-9-{1 if net == 'veth' else 2}.ec2.internal",
        dir=str(base / f"n-{net}"),
        user_data=_user_data(urls["mirror"], urls["hub"]),
        kubeconfig=str(kubeconfig),
        ports=ports,
        hosts={"registry-1.docker.io": "127.0.0.1", "docker.io": "127.0.0.1"},
        lab_certs={"docker.io": urls["hub"], "registry-1.docker.io": urls["hub"]},
        heartbeat_s=30.0,
        net=net,
    )
    node = LabNode(spec).start()
    try:
        node.wait_ready(90)
        ctd_log = spec.path / "ctd" / "containerd.log"
        socket = _socket(spec.path / "ctd")
        out: dict[str, Any] = {"net": node.net.get("mode"), "first": None, "direct": [], "mirror-warm": []}
        with CRIImageClient(str(socket), timeout=600) as cri:
            out["first"] = _pull(cri, ctd_log, MIRRORED)  # cold on the first node: it warms the mirror
            for _ in range(REPETITIONS):
                out["direct"].append(_pull(cri, ctd_log, DIRECT))
                out["mirror-warm"].append(_pull(cri, ctd_log, MIRRORED))
        return out
    finally:
        node.stop()


def _socket(ctd_dir: Path) -> Path:
    """The node containerd's socket (PrivateContainerd moves it to a short /tmp path when too long)."""
    from runbook_lab.containerd import PrivateContainerd

    return PrivateContainerd(ctd_dir, Path("/etc/containerd/certs.d")).socket


def inner(out_path: Path, work: Path) -> int:
    from runbook_lab.dockerhub import DockerHub, HubConfig
    from runbook_lab.images import seed_lab_images
    from runbook_lab.kube import KubeStandIn, write_kubeconfig
    from runbook_lab.registries import start_registry, stop_process

    work.mkdir(parents=True, exist_ok=True)
    reg = start_registry("docker.io", work / "reg", 0, work / "reg.log")
    hub = mirror = kube = None
    try:
        seed_lab_images({"docker.io": reg.url}, work / "img", image_mb=IMAGE_MB, multilayer_mb=4)
        config = HubConfig(limit=None, auth_limit=None, throttle_bytes_per_s=THROTTLE_BYTES_PER_S)
        hub = DockerHub(reg.url, config=config).start()
        mirror = start_registry("mirror", work / "mirror", 0, work / "mirror.log", proxy_remote=hub.url)
        kube = KubeStandIn().start()
        kubeconfig = write_kubeconfig(work / "kubeconfig", kube.url)
        ports = [hub.port, hub.token_port, mirror.port, kube.port]
        urls = {"hub": hub.url, "mirror": mirror.url}
        results = {net: _node_samples(work, net, ports, kubeconfig, urls) for net in ("veth", "bridge")}
    finally:
        if kube is not None:
            kube.stop()
        if mirror is not None:
            stop_process(mirror)
        if hub is not None:
            hub.stop()
        stop_process(reg)
    out_path.write_text(json.dumps(results, indent=1))
    return 0


# -- the figure ------------------------------------------------------------------------------------------
def _med(rows: list[dict[str, float]], key: str) -> float | None:
    return round(statistics.median(r[key] for r in rows), 4) if rows else None


def figure_from(results: dict[str, Any]) -> Figure:
    veth = results["veth"]
    direct_t, warm_t = _med(veth["direct"], "transfer_s"), _med(veth["mirror-warm"], "transfer_s")
    per_path = {}
    for net, res in results.items():
        per_path[net] = {
            "mode": res["net"],
            **{
                f"{label}_{key}": _med(res[label], key)
                for label in ("direct", "mirror-warm")
                for key in ("pull_s", "unpack_s", "transfer_s")
            },
            "first_mirror_pull_s": round(res["first"]["pull_s"], 4),
            "speedup_transfer": ratio(
                _med(res["direct"], "transfer_s"), _med(res["mirror-warm"], "transfer_s")
            ),
            "speedup_pull": ratio(_med(res["direct"], "pull_s"), _med(res["mirror-warm"], "pull_s")),
        }
    fig = Figure(
        f"{NAME} ({IMAGE_MB} MiB, {THROTTLE_BYTES_PER_S // 1_000_000} MB/s upstream)",
        "s (median transfer, direct)",
        direct_t,
        warm_t,
        "warm mirror, median transfer (s)",
        f"ratio >= {TARGET:g}",
        None,
        samples={
            f"{label} {key}": [round(r[key], 4) for r in veth[label]]
            for label in ("direct", "mirror-warm")
            for key in ("transfer_s", "unpack_s")
        },
        details={
            "measured": "CRI PullImage on a lab node (real containerd 1.6), image removed before each pull",
            "transfer_s": "pull_s - unpack_s (resolve, content fetch, image record)",
            "unpack_s": "sum of containerd's 'diff applied' d= durations (diff/apply/apply.go) per pull",
            "repetitions": REPETITIONS,
            "kernel_path": per_path.get("veth"),
            "bridge_path": per_path.get("bridge"),
        },
    )
    fig.ratio = ratio(direct_t, warm_t)
    fig.met = fig.ratio is not None and fig.ratio >= TARGET
    if veth["net"] != "veth":
        fig.explanation = f"the kernel path was not available; the node used the bridge: {veth['net']}"
    elif not fig.met:
        fig.explanation = (
            f"warm transfer {warm_t} s vs direct {direct_t} s; unpack (not in the ratio) "
            f"{per_path['veth']['mirror-warm_unpack_s']} s per pull"
        )
    return fig


def measure(work: Path) -> list[Figure]:
    # Short paths: containerd's sockets must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="nb", dir="/tmp"))
    out = Path(work) / "node_bench.json"
    Path(work).mkdir(parents=True, exist_ok=True)
    argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        done = run([*argv, PY, "-m", "bench.node_bench", "--inner", str(out), str(base)], cwd=str(REPO))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if done.returncode != 0 or not out.exists():
        fig = Figure(NAME, "x", None, None, "direct", f"ratio >= {TARGET:g}", False)
        fig.explanation = f"the node bench failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}"
        return [fig]
    return [figure_from(json.loads(out.read_text()))]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--inner":
        return inner(Path(argv[1]), Path(argv[2]))
    work = Path(tempfile.mkdtemp(prefix="eks-mirror-node-bench-"))
    for fig in measure(work):
        print(json.dumps(fig.to_json(), indent=1))
    print(f"median of {REPETITIONS}; figures in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
