"""Kubernetes connection from parameters (kubeconfig + context, in-cluster, or an API host override)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from runbook_lib.params import RunbookParams


class KubeConfigError(Exception):
    pass


def _use_in_cluster(params: RunbookParams) -> bool:
    """In a pod (KUBERNETES_SERVICE_HOST set) with no kubeconfig anywhere, use the service account.

    Without this, a CronJob with no kubeconfig fails in load_kube_config (~/.kube/config missing) although
    the pod's own token and CA are mounted; a kubeconfig given explicitly (parameter, KUBECONFIG or the
    default file) still wins, as with kubectl.
    """
    k = params.kubernetes
    if k.in_cluster:
        return True
    if k.kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG"):
        return False
    return not Path(os.path.expanduser("~/.kube/config")).exists()


def api_client(params: RunbookParams) -> ApiClient:
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    k = params.kubernetes
    configuration = client.Configuration()
    try:
        if _use_in_cluster(params):
            config.load_incluster_config(client_configuration=configuration)
        else:
            path = params.path(k.kubeconfig)
            config.load_kube_config(
                config_file=str(path) if path else None,
                context=k.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, yaml.YAMLError) as err:  # a kubeconfig that is not YAML too
        raise KubeConfigError(f"cannot load Kubernetes configuration: {err}") from None
    if k.api_host:
        configuration.host = k.api_host
    return client.ApiClient(configuration)
