"""Shared pieces of the benchmarks: machine facts, load, a figure, the lab parameters copy.

The bench is not part of the test suite (pyproject's testpaths is ``tests``): it measures, and every
figure is a ratio against a baseline measured in the same run, so a slower or busier machine moves both.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PY = str(VENV_BIN / "python")
RUNBOOK = str(VENV_BIN / "runbook")
# The 1-minute load average above which a figure is marked provisional (2 cores shared with others).
BUSY_LOAD = 1.0


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+modified" if dirty else "")


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit(),
    }


@dataclass
class Figure:
    """One benchmark figure: value against a same-run baseline, with the target and how it stands."""

    name: str
    unit: str
    value: float | None
    baseline: float | None
    baseline_name: str
    target: str  # e.g. "ratio <= 2"
    met: bool | None
    ratio: float | None = None
    explanation: str = ""
    load_before: float | None = None
    load_after: float | None = None
    provisional: bool = False
    samples: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(argv, check=False, **kw)


def with_load(fig_fn: Callable[[], list[Figure]]) -> list[Figure]:
    """Measure figures with the 1-minute load average before and after; mark them provisional if busy."""
    before = load_average()
    figs = fig_fn()
    after = load_average()
    for fig in figs:
        fig.load_before, fig.load_after = before, after
        fig.provisional = max(before, after) > BUSY_LOAD
    return figs


# --------------------------------------------------------------------------------- lab parameters
PORT_OFFSET = 10000  # the bench lab's ports: parameters/lab.yaml's + this, so it never meets another lab


def _shift_ports(obj: Any, ports: set[int]) -> Any:
    if isinstance(obj, dict):
        return {k: _shift_ports(v, ports) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shift_ports(v, ports) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool) and obj in ports:
        return obj + PORT_OFFSET
    if isinstance(obj, str):
        for p in ports:
            obj = obj.replace(f":{p}/", f":{p + PORT_OFFSET}/")
            if obj.endswith(f":{p}"):
                obj = obj[: -len(str(p))] + str(p + PORT_OFFSET)
        return obj
    return obj


def lab_ports(data: dict[str, Any]) -> set[int]:
    lab = data["lab"]
    ports = {r["port"] for r in lab["registries"].values()}
    ports |= {lab["dockerhub"]["port"], lab["dockerhub"]["token_port"], lab["kube_port"], lab["moto_port"]}
    ports |= {lab.get("ingress_port", 18080), lab.get("karpenter_health_port", 18090)}
    ports |= {u["connector_port"] for u in data["upstreams"] if u.get("connector_port")}
    ports.add(int(data["nexus"]["url"].rsplit(":", 1)[1].split("/")[0]))
    return ports


def write_lab_params(work: Path, extra_upstreams: bool = False, mode: str | None = None) -> Path:
    """parameters/lab.yaml with every port shifted, its lab dir, kubeconfig and outputs under `work`.

    ``extra_upstreams`` adds registry.k8s.io and public.ecr.aws (six upstreams, the full Nexus
    configuration), proxying the gcr.io and ghcr.io stand-ins; ``mode`` sets security.mode.
    """
    src = REPO / "parameters" / "lab.yaml"
    data = yaml.safe_load(src.read_text())
    ports = lab_ports(data)
    lab_dir = work / "lab"
    data["lab"]["dir"] = str(lab_dir)
    data["lab"]["ingress_port"] = data["lab"].get("ingress_port", 18080)
    data["lab"]["karpenter_health_port"] = data["lab"].get("karpenter_health_port", 18090)
    data = _shift_ports(data, ports)
    data["nexus"]["initial_password_file"] = str(lab_dir / "nexus" / "data" / "admin.password")
    data["kubernetes"]["kubeconfig"] = str(lab_dir / "kubeconfig")
    data["outputs"]["dir"] = str(work / "outputs")
    name = "lab.yaml"
    if extra_upstreams:
        by_reg = {u["registry"]: u for u in data["upstreams"]}
        top = max(u["connector_port"] for u in data["upstreams"])
        data["upstreams"] += [
            {
                "name": "registry-k8s-io",
                "registry": "registry.k8s.io",
                "remote_url": by_reg["gcr.io"]["remote_url"],
                "connector_port": top + 1,
            },
            {
                "name": "public-ecr-aws",
                "registry": "public.ecr.aws",
                "remote_url": by_reg["ghcr.io"]["remote_url"],
                "connector_port": top + 2,
            },
        ]
        name = "lab6.yaml"
    if mode:
        data["security"]["mode"] = mode
        name = name.replace(".yaml", f"-{mode}.yaml")
    path = work / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
