"""Shared helpers of the stage-4 (Karpenter) tests; not a test module itself."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from runbook_lib import params as params_mod
from runbook_lib.karpenter import nodes as stage
from runbook_lib.karpenter import userdata

REPO = Path(__file__).resolve().parents[2]
LAB = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())


def make_params(
    upstreams: list[dict[str, Any]] | None = None, security: dict[str, Any] | None = None, **karpenter: Any
) -> params_mod.RunbookParams:
    data = copy.deepcopy(LAB)
    data["karpenter"].update(karpenter)
    if upstreams is not None:
        data["upstreams"] = upstreams
    if security is not None:
        data["security"] = security
    return params_mod.parse(data, "test", REPO / "parameters")


def upstream(registry: str, remote: str, mirror: str, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or registry.replace(".", "-"),
        "registry": registry,
        "remote_url": remote,
        "mirror_url": mirror,
    }


def no_secret(ref: str, user: str | None = None) -> str:
    raise AssertionError(f"this mode must not resolve {ref}")


def script_for(params: params_mod.RunbookParams, resolve=no_secret) -> str:
    return stage.render(params, resolve).generated.payload


def run_script(
    script: str, root: Path, extra_env: dict[str, str] | None = None, extra_path: list[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a boot script the way cloud-init would (bash), below `root`, with a minimal PATH."""
    path = [*extra_path, "/usr/bin", "/bin"]
    curl = shutil.which("curl")
    if curl:
        path.insert(0, os.path.dirname(curl))
    env = {"PATH": ":".join(path), userdata.ROOT_ENV: str(root), **(extra_env or {})}
    part = root.parent / f"{root.name}-part-001"  # cloud-init saves each part as a file and runs it
    part.write_text(script)
    return subprocess.run(["bash", str(part)], env=env, capture_output=True, text=True, timeout=120)


def tree(root: Path) -> dict[str, bytes]:
    """Every file below root (relative path -> bytes), temp files included, to compare two runs."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
