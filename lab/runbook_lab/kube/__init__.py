"""The lab's Kubernetes API stand-in: a stateful HTTP server held to kube-apiserver's documented behaviour.

Used by the lab (``python -m runbook_lab.kube``) and by tests; never imported by stage code. Clients are
the official Python client (kubernetes 37.0.1) and kubectl (>= 1.27), through a kubeconfig from
``write_kubeconfig``.

Served: core/v1 namespaces, nodes, pods (+status, +binding), events, secrets, configmaps, services (+status);
networking.k8s.io/v1 ingresses; batch/v1 jobs; apiextensions.k8s.io/v1 customresourcedefinitions; and the
kinds of the installed CRDs (by default Karpenter's NodePool/NodeClaim/EC2NodeClass at v1 and v1beta1,
Provisioner/Machine v1alpha5 and AWSNodeTemplate v1alpha1; see profiles.py and crds/PROVENANCE). Verbs:
create, get, list, watch, update, patch (merge, JSON, strategic merge, server-side apply), delete,
deletecollection; discovery, /version, a minimal /openapi/v3, Table output for kubectl.

Where each behaviour comes from is cited in the module that implements it. Known approximations and gaps
(also in the module docstrings):
- strategic merge patch uses a table of merge keys (patch.py); server-side apply treats lists as atomic
  (managed.py);
- CEL rules (x-kubernetes-validations) and `format` are not evaluated (schema.py);
- objects of a multi-version CRD are stored at the storage version and served at the others by rewriting
  apiVersion only (conversion "None"; Karpenter's v1<->v1beta1 conversion webhook is not reproduced);
- no controllers: no garbage collection of dependents, no kubelet (bound pods stay Terminating until deleted
  with gracePeriodSeconds=0), no scheduler (pods/binding exists for one), no Job controller; namespace
  deletion is finalized synchronously in place of the namespace controller;
- request bodies in protobuf are answered 415 (so `kubectl create configmap|secret|namespace ...`
  generators fail; `kubectl apply|create -f` work); no authentication or authorization;
- watch history is in memory (10,000 events): after a restart an old resourceVersion gets 410 Expired.
"""

from .errors import ApiError
from .kubeconfig import write_kubeconfig
from .profiles import PROFILES
from .server import KubeStandIn, RequestRecord

__all__ = ["ApiError", "KubeStandIn", "PROFILES", "RequestRecord", "write_kubeconfig"]
