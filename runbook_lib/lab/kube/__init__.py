"""The lab's Kubernetes API stand-in: a stateful HTTP server held to kube-apiserver's documented behaviour.

Used by the lab (``python -m runbook_lib.lab.kube``) and by tests; never imported by stage code.
"""

from .errors import ApiError
from .kubeconfig import write_kubeconfig
from .profiles import PROFILES
from .server import KubeStandIn, RequestRecord

__all__ = ["ApiError", "KubeStandIn", "PROFILES", "RequestRecord", "write_kubeconfig"]
