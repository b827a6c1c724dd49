"""A kubeconfig for the stand-in that both kubectl and kubernetes.config.load_kube_config accept."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# The stand-in does no authentication; a bearer token is still configured so that clients behave as they
# do against EKS (Authorization header sent on every request).
LAB_TOKEN = "lab-token-not-a-secret"


def kubeconfig_dict(server_url: str, context: str = "lab", namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {"token": LAB_TOKEN}}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}
        ],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(
    path: Path | str, server_url: str, context: str = "lab", namespace: str = "default"
) -> Path:
    """Write (atomically, mode 0600 like kubectl does) a kubeconfig pointing at `server_url` over plain
    http."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(kubeconfig_dict(server_url, context, namespace), fh, sort_keys=False)
    os.replace(tmp, path)
    return path
