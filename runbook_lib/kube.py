"""Kubernetes connection from parameters (kubeconfig + context, in-cluster, or an API host override)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from runbook_lib.params import RunbookParams


class KubeConfigError(Exception):
    pass


# Every request is bounded (connect, read): the client's default is to wait forever on a black-holed API.
REQUEST_TIMEOUT_S = (10.0, 60.0)


def _retries():  # noqa: ANN202 - urllib3.Retry, imported late like the client
    """Reads are retried with back-off on 5xx, resets and timeouts; any request is retried when the
    connection was never made. A write whose answer was lost may have happened, so it is not retried:
    the stage says what was applied, and a rerun, which reads first, converges."""
    import urllib3

    return urllib3.Retry(
        total=4,
        connect=3,
        read=2,
        status=3,
        other=0,
        backoff_factor=0.3,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
    )


def _bound_requests(api_client: ApiClient) -> None:
    rest = api_client.rest_client
    request = rest.request

    def bounded(method: str, url: str, *args, _request_timeout=None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return request(method, url, *args, _request_timeout=_request_timeout or REQUEST_TIMEOUT_S, **kwargs)

    rest.request = bounded


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
    configuration.retries = _retries()
    api = client.ApiClient(configuration)
    _bound_requests(api)
    return api


def get_json(api_client: ApiClient, path: str, **query: str | None) -> dict[str, Any]:
    """GET one API path as the server's JSON (camelCase), through the client's auth, retries and timeouts.

    Reads use this instead of the typed API classes: kubernetes-client 37's CoreV1Api module alone takes
    about 0.5 s to import (its pydantic-validated methods), and every stage kernel would pay it for two
    or three lists. Errors are the same ApiException (``.status``) the typed methods raise."""
    from kubernetes.client.exceptions import ApiException

    request = api_client.param_serialize(
        "GET",
        path,
        query_params=[(k, v) for k, v in query.items() if v is not None],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(
            http_resp=response, body=response.data.decode(errors="replace"), data=None
        )
    return json.loads(response.data)
