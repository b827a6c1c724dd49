"""Kubernetes connection from parameters (kubeconfig + context, in-cluster, or an API host override)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from runbook_lib.params import RunbookParams


class KubeConfigError(Exception):
    pass


def api_client(params: RunbookParams) -> ApiClient:
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    k = params.kubernetes
    configuration = client.Configuration()
    try:
        if k.in_cluster:
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
