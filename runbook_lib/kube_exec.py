"""Reading a file inside a pod (Kubernetes exec), e.g. Nexus's generated /nexus-data/admin.password."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


class PodExecError(Exception):
    pass


def read_file_in_pod(api_client: ApiClient, pod: str, path: str, container: str | None = None) -> str | None:
    """Content of *path* in NAMESPACE/POD, or None when the file does not exist (already bootstrapped)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream

    namespace, _, name = pod.partition("/")
    if not name:
        raise PodExecError(f"pod must be NAMESPACE/NAME, got {pod!r}")
    core = client.CoreV1Api(api_client)
    marker = "__runbook_no_such_file__"
    try:
        out = stream(
            core.connect_get_namespaced_pod_exec,
            name,
            namespace,
            container=container,
            command=["sh", "-c", f'cat "{path}" 2>/dev/null || echo {marker}'],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    except ApiException as err:
        raise PodExecError(f"exec in {pod} failed: {err.status} {err.reason}") from None
    if out.strip() == marker:
        return None
    return out
