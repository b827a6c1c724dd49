"""Karpenter simulation for the lab: NodePools -> NodeClaims -> EC2 instances (moto) -> lab nodes -> Nodes.

A controller process that talks to the Kubernetes API stand-in through the official client and a kubeconfig,
as Karpenter talks to an API server, and to EC2 (moto) through boto3. It reproduces the parts of Karpenter
(kubernetes-sigs/karpenter + aws/karpenter-provider-aws, v1 API; v1beta1 when only that is served) that the
runbook's Karpenter stage relies on; sources: kubernetes-sigs/karpenter
pkg/controllers/nodeclaim/disruption/drift.go and
aws/karpenter-provider-aws pkg/providers/amifamily/bootstrap/ (userData merge),
pkg/apis/v1/ec2nodeclass_hash.go:

* EC2NodeClass: annotated with `karpenter.k8s.aws/ec2nodeclass-hash` (+ `-hash-version`), a hash of its spec
  that ignores the selector terms and amiFamily (hash:"ignore" in pkg/apis/v1/ec2nodeclass.go) and includes
  userData; status `subnets`, `securityGroups`, `amis`, `instanceProfile` and conditions, resolved in EC2.
* NodePool: annotated with `karpenter.sh/nodepool-hash` (+ `-hash-version`), a hash of spec.template without
  requirements (NodePool.Hash()); so a change of `spec.template.metadata.annotations` drifts its nodes.
* NodeClaims: created from the pool's template (generateName `<pool>-`, finalizer karpenter.sh/termination,
  owner = the NodePool), launched with `ec2:RunInstances` carrying the userData Karpenter would build (the
  node class's userData merged with Karpenter's bootstrap part per AMI family) and tags karpenter.sh/nodepool,
  karpenter.sh/nodeclaim, karpenter.k8s.aws/ec2nodeclass, kubernetes.io/cluster/<cluster>; stamped with the
  hashes they were launched from; conditions Launched, Registered, Initialized, Ready (+ Drifted).
* Lab nodes: each launched instance boots a LabNode (node.py): the instance's userData runs for real in the
  node's namespaces, then real containerd and the kubelet stand-in, which registers the Node; Karpenter then
  marks the NodeClaim Registered (syncing labels, taints, finalizer, removing karpenter.sh/unregistered) and,
  once the Node is Ready, Initialized.
* Drift (areStaticFieldsDrifted, both providers): when the NodeClaim's hash and hash-version annotations and
  its NodePool's / EC2NodeClass's differ, condition `Drifted=True` with reason NodePoolDrifted or
  NodeClassDrift.
* Disruption at the pace of `spec.disruption.budgets` (NodePool.GetAllowedDisruptionsByReason): allowed =
  min over the budgets that apply to reason Drifted (no `reasons` = all) of `nodes` (a count, or a percentage
  of the pool's initialized nodes rounded up), minus the pool's nodes being disrupted, deleted or NotReady;
  no budgets = unbounded. Each drifted node is tainted karpenter.sh/disrupted:NoSchedule, a replacement is
  pre-spun (Event DisruptionLaunching "Launching NodeClaim: Drifted" on it), and once the replacement is
  initialized the old one is deleted (DisruptionTerminating "Disrupting Node: Drifted" / "Disrupting
  NodeClaim: Drifted"; messages from pkg/controllers/disruption/events). A budget of 0 emits
  DisruptionBlocked on the NodePool. `karpenter.sh/do-not-disrupt: "true"` on the Node or NodeClaim is
  honoured.
* Termination (finalizer karpenter.sh/termination): taint, evict the node's Pods, stop the lab node, terminate
  the instance, delete the Node, remove the finalizer. NodeClaims whose instance no longer exists in EC2 are
  garbage-collected (Karpenter's nodeclaim GC; one tagged DescribeInstances at most every 5 s), e.g. after
  the lab's moto restarted.
* A lab node that fails to boot gets `Registered=False` (reason NodeFailed) and a Warning Event
  `FailedLaunching` with the end of its logs; like Karpenter's registration liveness (15 min there,
  `registration_ttl_s` = 120 s here) the NodeClaim is deleted if it never registers, and then replaced.
  A launched instance whose lab node is not running in this process (after a restart of the simulation, or
  a node process that ended after booting) is booted again, like a reboot.
* v1beta1 (Karpenter v0.32-v0.37 CRDs): same flow; its NodePool has no status conditions, and provisioning
  waits for the node class to be Ready, as in v1.

Deliberate approximations (the lab is not a scheduler simulation):
* Pool size is fixed: `lab.node_pools[pool]` nodes per NodePool (like a static NodePool), instead of sizing
  to pending Pods; pools not in that map get no nodes. A replacement is always pre-spun, even for an empty
  node.
* The hash is SHA-256 over a canonical JSON (zero values dropped, lists as sets), printed as a decimal
  uint64 like Karpenter's hashstructure hash; the values differ from real Karpenter, the behaviour does not.
* AMIs are resolved from moto's public images by name (al2023-ami-*, amzn2-ami-*, ...), not from the EKS
  SSM parameters; budgets with a `schedule` are treated as always active; expiration and consolidation are
  not simulated; v1alpha5/v1alpha1 (Provisioner, Machine, AWSNodeTemplate) are not served by this simulation.
* The lab has no kube-scheduler: this process also binds Pending Pods that name no node to a Ready node that
  fits their nodeSelector, required node affinity and taints (pods/binding, Event "Scheduled"), and removes
  Pods bound to Nodes that no longer exist (the pod garbage collector's job).

The lab nodes' userData scripts get moto's endpoint and dummy credentials in their environment and the AWS CLI
on PATH (`node_role_env`): the lab's stand-in for the node's instance role, so the secrets-manager credential
mode can read its secret at boot.

CLI: `python -m runbook_lab.karpenter --kubeconfig PATH --nodes-dir DIR --aws-endpoint URL --params FILE
[--health-port N] [--image-maximum-gc-age SECONDS] [--api-version v1|v1beta1]`; serves until SIGTERM, then
stops its lab nodes (by PID) and exits 0. /healthz, /readyz and /_lab/nodes on the health port (see
`health_server`). On a cluster with neither NodePools nor EC2NodeClasses it first creates the lab cluster "as
it was before the runbook": an EC2NodeClass `default` (AL2023, alias al2023@latest, subnets and security group
found by the tag karpenter.sh/discovery=<cluster>, which it puts on moto's default VPC) with a userData of its
own (a shell part writing /etc/lab-node/cluster-user-data), and one NodePool per `lab.node_pools` entry
(m5.large, on-demand, budget 10%).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import hashlib
import json
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CORE_GROUP, AWS_GROUP = "karpenter.sh", "karpenter.k8s.aws"
LABEL_NODEPOOL = "karpenter.sh/nodepool"
LABEL_NODECLASS = "karpenter.k8s.aws/ec2nodeclass"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"
LABEL_REGISTERED = "karpenter.sh/registered"
LABEL_INITIALIZED = "karpenter.sh/initialized"
ANN_NODEPOOL_HASH = "karpenter.sh/nodepool-hash"
ANN_NODEPOOL_HASH_VERSION = "karpenter.sh/nodepool-hash-version"
ANN_NODECLASS_HASH = "karpenter.k8s.aws/ec2nodeclass-hash"
ANN_NODECLASS_HASH_VERSION = "karpenter.k8s.aws/ec2nodeclass-hash-version"
ANN_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
TERMINATION_FINALIZER = "karpenter.sh/termination"
DISCOVERY_TAG = "karpenter.sh/discovery"
MERGE_PATCH = "application/merge-patch+json"
REASON_DRIFTED = "Drifted"
NODEPOOL_DRIFTED, NODECLASS_DRIFT = "NodePoolDrifted", "NodeClassDrift"

# Instance types the lab knows (capacity as Karpenter reports it for the EKS AMIs; pods = ENI-limited max).
INSTANCE_TYPES: dict[str, dict[str, str]] = {
    "m5.large": {"cpu": "2", "memory": "7910Mi", "pods": "29", "ephemeral-storage": "20Gi"},
    "m5.xlarge": {"cpu": "4", "memory": "15730Mi", "pods": "58", "ephemeral-storage": "20Gi"},
    "c5.large": {"cpu": "2", "memory": "3788Mi", "pods": "29", "ephemeral-storage": "20Gi"},
    "t3.medium": {"cpu": "2", "memory": "3788Mi", "pods": "17", "ephemeral-storage": "20Gi"},
}
DEFAULT_INSTANCE_TYPE = "m5.large"
AMI_NAME_PATTERNS = {
    "AL2023": "al2023-ami-2023*-x86_64",
    "AL2": "amzn2-ami-hvm-*-x86_64-gp2",
    "Bottlerocket": "bottlerocket-aws-k8s-*-x86_64*",
    "Custom": "al2023-ami-2023*-x86_64",
}

# The lab cluster's own userData before the runbook ran: the stage must keep it when it merges its block.
DEFAULT_USER_DATA = """MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="CLUSTER"

--CLUSTER
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash
# The cluster's own node setup (present before the mirror runbook; it must survive the runbook's merge).
mkdir -p /etc/lab-node
echo "node set up by the cluster's own userData" > /etc/lab-node/cluster-user-data

--CLUSTER--
"""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- API flavours ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flavor:
    """Differences between the Karpenter API versions the simulation serves."""

    version: str  # "v1" or "v1beta1"
    nodepool_hash_version: str
    nodeclass_hash_version: str
    disrupted_taint: dict[str, str]
    unregistered_taint: dict[str, str] | None

    def node_class_ref(self, name: str) -> dict[str, str]:
        if self.version == "v1":
            return {"group": AWS_GROUP, "kind": "EC2NodeClass", "name": name}
        return {"apiVersion": f"{AWS_GROUP}/v1beta1", "kind": "EC2NodeClass", "name": name}


# hash versions: NodePoolHashVersion v3 (v1.x), EC2NodeClassHashVersion v4 (v1.0); v1beta1 (v0.36-0.37): v2
# both
FLAVORS = {
    "v1": Flavor(
        "v1",
        "v3",
        "v4",
        {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"},
        {"key": "karpenter.sh/unregistered", "effect": "NoExecute"},
    ),
    "v1beta1": Flavor(
        "v1beta1",
        "v2",
        "v2",
        {"key": "karpenter.sh/disruption", "value": "disrupting", "effect": "NoSchedule"},
        None,
    ),
}


# -- hashing, budgets, userData (pure functions) ------------------------------------------------------
def _canonical(value: Any) -> Any:
    """Zero values dropped (IgnoreZeroValue/ZeroNil) and lists ordered (SlicesAsSets), recursively."""
    if isinstance(value, dict):
        out = {k: _canonical(v) for k, v in value.items()}
        return {k: v for k, v in sorted(out.items()) if v not in (None, "", 0, False, [], {})}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def stable_hash(value: Any) -> str:
    digest = hashlib.sha256(
        json.dumps(_canonical(value), sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    return str(int.from_bytes(digest[:8], "big"))


def node_class_family(spec: dict[str, Any]) -> str:
    """amiFamily as Karpenter resolves it: from an `alias` term when there is one, else the field."""
    for term in spec.get("amiSelectorTerms") or []:
        alias = (term or {}).get("alias")
        if alias:
            family = alias.split("@", 1)[0].lower()
            return {"al2": "AL2", "al2023": "AL2023", "bottlerocket": "Bottlerocket"}.get(
                family, family.capitalize()
            )
    return spec.get("amiFamily") or "Custom"


def nodeclass_hash(spec: dict[str, Any]) -> str:
    hashed = {
        k: v
        for k, v in (spec or {}).items()
        if k
        not in (
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "capacityReservationSelectorTerms",
            "amiSelectorTerms",
            "amiFamily",
            "ipPrefixCount",
        )
    }
    return stable_hash([hashed, node_class_family(spec or {})])


def nodepool_hash(spec: dict[str, Any]) -> str:
    template = json.loads(json.dumps((spec or {}).get("template") or {}))
    (template.get("spec") or {}).pop("requirements", None)
    return stable_hash(template)


def budget_value(nodes: str, total: int) -> int:
    """A budget's `nodes` as a count: "N" or "N%" of `total`, rounded up (GetScaledValueFromIntOrPercent)."""
    text = str(nodes).strip()
    if text.endswith("%"):
        return math.ceil(total * int(text[:-1]) / 100)
    return int(text)


def allowed_disruptions(
    pool: dict[str, Any], total: int, disrupting: int, reason: str = REASON_DRIFTED
) -> int:
    budgets = ((pool.get("spec") or {}).get("disruption") or {}).get("budgets") or []
    allowed = None
    for budget in budgets:
        reasons = budget.get("reasons")
        if reasons is not None and reason not in reasons:
            continue
        value = budget_value(budget.get("nodes", "10%"), total)
        allowed = value if allowed is None else min(allowed, value)
    if allowed is None:
        return max(total, 1) * 1000  # no budget applies: unbounded (MaxInt32 in Karpenter)
    return max(allowed - disrupting, 0)


def _mime_parts(user_data: str) -> list[tuple[dict[str, str], str]] | None:
    """(headers, body) of each part of a MIME multipart userData; None when it is not MIME."""
    import email
    import email.policy

    stripped = user_data.lstrip()
    if not stripped.startswith(("MIME-Version:", "Content-Type:")):
        return None
    message = email.message_from_string(stripped, policy=email.policy.compat32)
    parts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        headers = {k: v for k, v in part.items()}
        body = part.get_payload()
        parts.append((headers, body if isinstance(body, str) else ""))
    return parts


def _mime_archive(parts: list[tuple[dict[str, str], str]]) -> str:
    out = ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="//"', ""]
    for headers, body in parts:
        out.append("--//")
        out.extend(f"{k}: {v}" for k, v in headers.items())
        out.append("")
        out.append(body.rstrip("\n"))
    out.append("--//--")
    return "\n".join(out) + "\n"


def karpenter_user_data(
    family: str,
    user_data: str,
    cluster: str,
    endpoint: str,
    labels: dict[str, str],
    taints: list[dict[str, str]],
    max_pods: str,
) -> str:
    """The userData Karpenter hands to EC2 for a node class (aws/karpenter-provider-aws
    pkg/providers/amifamily/bootstrap/): the user's content merged with Karpenter's bootstrap.
    AL2: user parts (all headers kept), then a bash part calling /etc/eks/bootstrap.sh;
    AL2023 (v1 order): user parts (Content-Type only), then Karpenter's NodeConfig; Bottlerocket: the user's
    TOML with settings.kubernetes set; Custom: unchanged. Always MIME with boundary "//" for AL2/AL2023."""
    import tomllib

    import tomli_w
    import yaml

    user_data = (user_data or "").replace("\r", "")
    node_labels = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    node_taints = ",".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in taints)
    if family == "Custom":
        return user_data
    if family == "Bottlerocket":
        doc = tomllib.loads(user_data) if user_data.strip() else {}
        settings = {"settings": doc.get("settings") or {}}
        kube = settings["settings"].setdefault("kubernetes", {})
        kube.update(
            {
                "cluster-name": cluster,
                "api-server": endpoint,
                "node-labels": dict(sorted(labels.items())),
                "max-pods": int(max_pods),
            }
        )
        if taints:
            kube["node-taints"] = {t["key"]: [f"{t.get('value', '')}:{t['effect']}"] for t in taints}
        return tomli_w.dumps(settings)
    parts = _mime_parts(user_data)
    if parts is None:
        if not user_data.strip():
            parts = []
        elif family == "AL2023" and not user_data.lstrip().startswith("#!") and _yaml_mapping(user_data):
            parts = [({"Content-Type": "application/node.eks.aws"}, user_data)]
        else:
            parts = [({"Content-Type": 'text/x-shellscript; charset="us-ascii"'}, user_data)]
    if family == "AL2023":
        parts = [({"Content-Type": h.get("Content-Type", "text/plain")}, b) for h, b in parts]
        flags = [f"--node-labels={node_labels}"] + (
            [f"--register-with-taints={node_taints}"] if node_taints else []
        )
        node_config = {
            "apiVersion": "node.eks.aws/v1alpha1",
            "kind": "NodeConfig",
            "spec": {
                "cluster": {
                    "name": cluster,
                    "apiServerEndpoint": endpoint,
                    "certificateAuthority": "",
                    "cidr": "10.100.0.0/16",
                },
                "kubelet": {
                    "config": {"maxPods": int(max_pods), "clusterDNS": ["10.100.0.10"]},
                    "flags": flags,
                },
            },
        }
        parts.append(
            ({"Content-Type": "application/node.eks.aws"}, yaml.safe_dump(node_config, sort_keys=False))
        )
        return _mime_archive(parts)
    extra = f"--node-labels={node_labels}" + (f" --register-with-taints={node_taints}" if node_taints else "")
    bootstrap = (
        "#!/bin/bash -xe\n"
        "exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n"
        f"/etc/eks/bootstrap.sh '{cluster}' --apiserver-endpoint '{endpoint}' --b64-cluster-ca '' \\\n"
        f"--dns-cluster-ip '10.100.0.10' \\\n--use-max-pods false \\\n"
        f"--kubelet-extra-args '{extra} --max-pods={max_pods}'"
    )
    parts.append(({"Content-Type": 'text/x-shellscript; charset="us-ascii"'}, bootstrap))
    return _mime_archive(parts)


def _yaml_mapping(text: str) -> bool:
    import yaml

    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


def instance_type_for(requirements: Iterable[dict[str, Any]]) -> str:
    for req in requirements or []:
        if req.get("key") == LABEL_INSTANCE_TYPE and req.get("operator") == "In":
            for value in req.get("values") or []:
                if value in INSTANCE_TYPES:
                    return value
    return DEFAULT_INSTANCE_TYPE


# -- conditions ------------------------------------------------------------------------------------------
def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def is_true(obj: dict[str, Any] | None, type_: str) -> bool:
    c = condition(obj or {}, type_)
    return bool(c) and c.get("status") == "True"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> bool:
    """Set a condition the way operatorpkg does: lastTransitionTime moves only when the status changes."""
    for c in conditions:
        if c.get("type") == type_:
            if (c.get("status"), c.get("reason"), c.get("message", "")) == (status, reason, message):
                return False
            if c.get("status") != status:
                c["lastTransitionTime"] = now_rfc3339()
            c.update(status=status, reason=reason, message=message)
            if generation is not None:
                c["observedGeneration"] = generation
            return True
    row = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339(),
    }
    if generation is not None:
        row["observedGeneration"] = generation
    conditions.append(row)
    return True


def drop_condition(conditions: list[dict[str, Any]], type_: str) -> bool:
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.get("type") != type_]
    return len(conditions) != before


# -- the lab around the simulation ----------------------------------------------------------------------
@dataclass
class LabCluster:
    """What the simulation needs to know about the lab (see `cluster_from_params`)."""

    node_pools: dict[str, int]
    cluster_name: str = "lab"
    region: str = "us-east-1"
    ports: list[int] = field(default_factory=list)  # lab service ports bridged into every node
    hosts: dict[str, str] = field(default_factory=dict)  # node /etc/hosts entries
    lab_certs: dict[str, str] = field(default_factory=dict)  # the lab's DNS for registries (node.py)
    kubeconfig: str = ""
    api_server: str = ""
    kubelet_version: str = "v1.33.5-eks-lab"
    userdata_env: dict[str, str] = field(default_factory=dict)
    heartbeat_s: float = 10.0
    image_maximum_gc_age_s: float = 0.0  # kubelet imageMaximumGCAge of the lab nodes; 0 = off


def _url_port(url: str | None) -> int | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def lab_service_ports(params: Any) -> list[int]:
    """Every lab service port named in the parameters: Nexus and its connectors, the ingress proxy, the
    Docker Hub front and token service, the registries, the Kubernetes API stand-in and moto."""
    ports: set[int | None] = {
        _url_port(params.nexus.url),
        _url_port(params.aws.endpoint_url),
        _url_port(params.kubernetes.api_host),
    }
    for up in params.upstreams:
        ports.update({up.connector_port, _url_port(up.mirror_url), _url_port(up.remote_url)})
    lab = params.lab
    if lab is not None:
        ports.update(
            {lab.ingress_port, lab.dockerhub.port, lab.dockerhub.token_port, lab.kube_port, lab.moto_port}
        )
        ports.update(reg.port for reg in lab.registries.values())
    return sorted(p for p in ports if p)


def node_role_env(aws_endpoint: str, region: str) -> dict[str, str]:
    """The lab's stand-in for a node's instance role: userData scripts get moto's endpoint and dummy
    credentials
    in their environment (a real node gets credentials from the instance metadata service), and the AWS CLI
    on PATH, so the secrets-manager credential mode can read its secret at boot."""
    import shutil

    from runbook_lab.node import USERDATA_PATH

    env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ACCESS_KEY_ID": "lab-node-role",
        "AWS_SECRET_ACCESS_KEY": "lab-node-role",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }
    aws_cli = shutil.which("aws")
    if aws_cli and str(Path(aws_cli).parent) not in USERDATA_PATH.split(":"):
        env["PATH"] = f"{USERDATA_PATH}:{Path(aws_cli).parent}"
    return env


def cluster_from_params(
    params: Any, kubeconfig: str, api_server: str = "", aws_endpoint: str = ""
) -> LabCluster:
    from runbook_lab.node import PUBLIC_REGISTRY_NAMES

    if params.lab is None:
        raise ValueError("the parameters have no lab section")
    hosts = {name: "127.0.0.1" for name in (*PUBLIC_REGISTRY_NAMES, *params.resolve)}
    for up in params.upstreams:
        hosts[up.registry] = "127.0.0.1"
    lab_certs = {up.registry: up.remote_url for up in params.upstreams}
    docker = next((up for up in params.upstreams if up.registry == "docker.io"), None)
    if docker is not None:
        lab_certs["registry-1.docker.io"] = docker.remote_url  # the mirror-bypassing alias (node.py)
    aws_endpoint = aws_endpoint or params.aws.endpoint_url or f"http://127.0.0.1:{params.lab.moto_port}"
    ports = sorted({*lab_service_ports(params), _url_port(aws_endpoint) or 0} - {0})
    return LabCluster(
        node_pools=dict(params.lab.node_pools),
        cluster_name=params.aws.cluster_name or "lab",
        region=params.aws.region,
        ports=ports,
        hosts=hosts,
        lab_certs=lab_certs,
        kubeconfig=kubeconfig,
        api_server=api_server or f"http://127.0.0.1:{params.lab.kube_port}",
        userdata_env=node_role_env(aws_endpoint, params.aws.region),
    )


# -- EC2 (moto) ------------------------------------------------------------------------------------------
class Ec2:
    """The EC2 calls Karpenter makes, against moto (boto3 with the moto endpoint and dummy credentials)."""

    def __init__(self, endpoint_url: str, region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        self.region = region
        self.client = boto3.client(
            "ec2",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )

    @staticmethod
    def _filters(term: dict[str, Any]) -> list[dict[str, Any]]:
        filters = []
        for key, value in (term.get("tags") or {}).items():
            filters.append(
                {"Name": "tag-key", "Values": [key]}
                if value == "*"
                else {"Name": f"tag:{key}", "Values": [value]}
            )
        return filters

    def tag_discovery(self, cluster: str) -> None:
        """Tag the default VPC's subnets and security group for discovery, as the getting-started guide
        does."""
        vpcs = self.client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            return
        vpc = vpcs[0]["VpcId"]
        ids = [
            s["SubnetId"]
            for s in self.client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        ]
        ids += [
            g["GroupId"]
            for g in self.client.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
            )["SecurityGroups"]
        ]
        if ids:
            self.client.create_tags(Resources=ids, Tags=[{"Key": DISCOVERY_TAG, "Value": cluster}])

    def subnets(self, terms: list[dict[str, Any]]) -> list[dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for term in terms or []:
            kwargs: dict[str, Any] = {"Filters": self._filters(term)}
            if term.get("id"):
                kwargs["SubnetIds"] = [term["id"]]
            for s in self.client.describe_subnets(**kwargs)["Subnets"]:
                found[s["SubnetId"]] = {
                    "id": s["SubnetId"],
                    "zone": s["AvailabilityZone"],
                    "zoneID": s.get("AvailabilityZoneId", ""),
                }
        return sorted(found.values(), key=lambda s: (s["zone"], s["id"]))

    def security_groups(self, terms: list[dict[str, Any]]) -> list[dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for term in terms or []:
            kwargs: dict[str, Any] = {"Filters": self._filters(term)}
            if term.get("id"):
                kwargs["GroupIds"] = [term["id"]]
            if term.get("name"):
                kwargs["Filters"].append({"Name": "group-name", "Values": [term["name"]]})
            for g in self.client.describe_security_groups(**kwargs)["SecurityGroups"]:
                found[g["GroupId"]] = {"id": g["GroupId"], "name": g.get("GroupName", "")}
        return sorted(found.values(), key=lambda g: g["id"])

    def amis(self, family: str, terms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = []
        for term in terms or [{}]:
            if term.get("id"):
                images += self.client.describe_images(ImageIds=[term["id"]])["Images"]
            elif term.get("alias") or not term:
                pattern = AMI_NAME_PATTERNS.get(family, AMI_NAME_PATTERNS["AL2023"])
                found = self.client.describe_images(
                    Owners=["amazon"],
                    Filters=[
                        {"Name": "name", "Values": [pattern]},
                        {"Name": "architecture", "Values": ["x86_64"]},
                    ],
                )["Images"]
                if not found:
                    found = self.client.describe_images(
                        Owners=["amazon"], Filters=[{"Name": "name", "Values": [AMI_NAME_PATTERNS["AL2023"]]}]
                    )["Images"]
                images += [i for i in found if "minimal" not in i.get("Name", "")] or found
            else:
                filters = self._filters(term)
                if term.get("name"):
                    filters.append({"Name": "name", "Values": [term["name"]]})
                kwargs: dict[str, Any] = {"Filters": filters}
                if term.get("owner"):
                    kwargs["Owners"] = [term["owner"]]
                images += self.client.describe_images(**kwargs)["Images"]
        newest = sorted(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]), reverse=True)[:1]
        return [
            {
                "id": i["ImageId"],
                "name": i.get("Name", ""),
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
            }
            for i in newest
        ]

    def launch(
        self,
        image_id: str,
        instance_type: str,
        subnet_id: str,
        security_groups: list[str],
        user_data: str,
        tags: dict[str, str],
    ) -> dict[str, Any]:
        # botocore base64-encodes UserData for RunInstances, as the EC2 API requires
        reply = self.client.run_instances(
            ImageId=image_id,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            SecurityGroupIds=security_groups,
            UserData=user_data,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        return reply["Instances"][0]

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            reservations = self.client.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as exc:
            if "NotFound" in exc.response.get("Error", {}).get("Code", ""):
                return None
            raise
        for r in reservations:
            for i in r["Instances"]:
                if i["State"]["Name"] not in ("terminated", "shutting-down"):
                    return i
        return None

    def live_instance_ids(self, cluster: str) -> set[str]:
        """Ids of this cluster's Karpenter instances that are pending or running (one DescribeInstances)."""
        ids: set[str] = set()
        pages = self.client.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag-key", "Values": ["karpenter.sh/nodeclaim"]},
                {"Name": f"tag:kubernetes.io/cluster/{cluster}", "Values": ["owned"]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                ids.update(i["InstanceId"] for i in reservation["Instances"])
        return ids

    def user_data(self, instance_id: str) -> str:
        value = self.client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")[
            "UserData"
        ]
        return base64.b64decode(value.get("Value", "")).decode() if value.get("Value") else ""

    def terminate(self, instance_id: str) -> None:
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):
            self.client.terminate_instances(InstanceIds=[instance_id])


def instance_id_of(provider_id: str) -> str:
    return provider_id.rsplit("/", 1)[-1] if provider_id else ""


# -- the controller --------------------------------------------------------------------------------------
@dataclass
class Command:
    """One disruption in flight: candidates are replaced once their replacements are initialized."""

    pool: str
    reason: str
    candidates: list[str]
    replacements: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class KarpenterSim:
    """The controller. `reconcile()` is one pass over the cluster; `start()` runs passes in a thread, woken by
    watches, and `stop()` ends the loop and stops every lab node this process started."""

    def __init__(
        self,
        api: Any,
        ec2: Ec2,
        cluster: LabCluster,
        nodes_dir: Path,
        *,
        version: str | None = None,
        registration_ttl_s: float = 120.0,
        resync_s: float = 10.0,
        log: Callable[[str], None] = print,
    ) -> None:
        from kubernetes import client

        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.ec2 = ec2
        self.cluster = cluster
        self.nodes_dir = Path(nodes_dir)
        self.flavor = FLAVORS[version or self._served_version()]
        self.registration_ttl_s = registration_ttl_s
        self.resync_s = resync_s
        self.log = log
        self.nodes: dict[str, Any] = {}  # NodeClaim name -> LabNode
        self.commands: list[Command] = []
        self._terminating: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._launch_retry: dict[str, float] = {}
        self._launched_at: dict[str, float] = {}  # instance id -> when this process launched it
        self._live: tuple[float, set[str]] = (0.0, set())  # (when listed, live instance ids)
        self._events_sent: dict[tuple[str, str, str], float] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="karpenter")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Any] = []
        self._bootstrapped = False
        self.last_ok: float | None = None
        self.last_error: str = ""
        self.passes = 0

    # -- plumbing ------------------------------------------------------------------------------------
    def _served_version(self) -> str:
        from kubernetes import client

        for group in client.ApisApi(self.api).get_api_versions().groups:
            if group.name == CORE_GROUP:
                versions = [v.version for v in group.versions]
                preferred = group.preferred_version.version if group.preferred_version else ""
                for candidate in (preferred, "v1", "v1beta1"):
                    if candidate in FLAVORS and candidate in versions:
                        return candidate
        raise RuntimeError("the API server serves no karpenter.sh v1 or v1beta1 (install the Karpenter CRDs)")

    def _list(self, group: str, plural: str) -> list[dict[str, Any]]:
        raw = self.custom.list_cluster_custom_object(
            group, self.flavor.version, plural, _preload_content=False
        )
        return json.loads(raw.data).get("items") or []

    def _patch(
        self, group: str, plural: str, name: str, body: dict[str, Any], status: bool = False
    ) -> dict[str, Any]:
        fn = (
            self.custom.patch_cluster_custom_object_status
            if status
            else self.custom.patch_cluster_custom_object
        )
        return fn(group, self.flavor.version, plural, name, body, _content_type=MERGE_PATCH)

    def _patch_claim_status(self, claim: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self._patch(CORE_GROUP, "nodeclaims", claim["metadata"]["name"], {"status": status}, status=True)
        except ApiException as exc:
            if exc.status != 404:
                raise
        claim["status"] = {**(claim.get("status") or {}), **status}

    def _core_json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return json.loads(fn(*args, _preload_content=False, **kwargs).data)

    def event(
        self, obj: dict[str, Any], kind: str, api_version: str, type_: str, reason: str, message: str
    ) -> None:
        """An Event like Karpenter's recorder writes (cluster-scoped objects: namespace "default"),
        deduplicated."""
        meta = obj.get("metadata") or {}
        key = (meta.get("uid", meta.get("name", "")), reason, message)
        if key in self._events_sent and time.monotonic() - self._events_sent[key] < 60:
            return
        self._events_sent[key] = time.monotonic()
        stamp = now_rfc3339()
        body = {
            "metadata": {"name": f"{meta.get('name')}.{time.time_ns():x}", "namespace": "default"},
            "involvedObject": {
                "kind": kind,
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "apiVersion": api_version,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "karpenter"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "karpenter",
            "reportingInstance": "karpenter-lab",
        }
        try:
            self.core.create_namespaced_event("default", body, _preload_content=False)
        except Exception as exc:
            self.log(f"karpenter: event {reason} not recorded: {exc}")
        self.log(f"karpenter: {type_} {reason} {kind}/{meta.get('name')}: {message}")

    def _claim_event(self, claim: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.event(claim, "NodeClaim", f"{CORE_GROUP}/{self.flavor.version}", type_, reason, message)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> KarpenterSim:
        from runbook_lab.kubelet import ObjectWatch
        from runbook_lab.node import stop_stale

        stopped = stop_stale(self.nodes_dir)
        if stopped:
            self.log(f"karpenter: stopped {len(stopped)} lab node process(es) left by an earlier run")
        wake: Callable[[str, dict[str, Any]], None] = lambda *_: self._wake.set()  # noqa: E731
        for group, plural in (
            (CORE_GROUP, "nodepools"),
            (CORE_GROUP, "nodeclaims"),
            (AWS_GROUP, "ec2nodeclasses"),
        ):
            self._watches.append(
                ObjectWatch(
                    self.custom.list_cluster_custom_object,
                    wake,
                    plural,
                    group=group,
                    version=self.flavor.version,
                    plural=plural,
                ).start()
            )
        self._watches.append(ObjectWatch(self.core.list_node, wake, "nodes").start())
        self._watches.append(
            ObjectWatch(
                self.core.list_pod_for_all_namespaces, wake, "pods", field_selector="status.phase=Pending"
            ).start()
        )
        self._thread = threading.Thread(target=self._loop, daemon=True, name="karpenter-loop")
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            self._run_passes()
        finally:
            # The lab nodes are tied to this thread (PR_SET_PDEATHSIG fires when the thread that started them
            # ends), so this thread stops them before it ends: gracefully, not by the kernel's SIGKILL.
            self._stop_nodes()

    def _stop_nodes(self) -> None:
        nodes, self.nodes = list(self.nodes.values()), {}
        stoppers = [threading.Thread(target=n.stop, kwargs={"timeout": 10}) for n in nodes]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def _run_passes(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
                self.last_ok, self.last_error = time.monotonic(), ""
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.log("karpenter: reconcile failed:\n" + traceback.format_exc())
            busy = bool(
                self.commands
                or self._terminating
                or any((n.status().get("phase") != "ready") for n in self.nodes.values())
            )
            self._wake.wait(0.5 if busy else self.resync_s)
            self._wake.clear()
            self._stop.wait(0.05)  # let a burst of watch events settle into one pass

    def stop(self, timeout: float = 40.0) -> None:
        """End the loop; the loop thread stops the lab nodes (in parallel, SIGTERM then SIGKILL after 10
        s)."""
        self._stop.set()
        self._wake.set()
        for w in self._watches:
            w.stop()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        else:
            self._stop_nodes()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- status for health checks ------------------------------------------------------------------
    def node_report(self) -> list[dict[str, Any]]:
        rows = []
        for name, node in sorted(self.nodes.items()):
            st = node.status()
            rows.append(
                {
                    "nodeclaim": name,
                    "node": node.spec.name,
                    "pid": node.pid,
                    "node_pid": node.node_pid,
                    "phase": st.get("phase"),
                    "error": st.get("error", ""),
                    "dir": str(node.dir),
                }
            )
        return rows

    def ready(self) -> bool:
        """Every NodePool of the lab has its nodes initialized, each with its lab node up in this process
        (after a
        restart, persisted NodeClaims say Initialized before their nodes have booted again), and no disruption
        is in flight."""
        if self.last_ok is None or self.commands:
            return False
        try:
            claims = self._list(CORE_GROUP, "nodeclaims")
        except Exception:
            return False
        try:
            # a claim counts only while its instance exists: right after moto restarted, the claims still say
            # Initialized until the next pass garbage-collects them
            live = self._live_instances(max_age_s=0.0)
        except Exception:
            return False
        for pool, wanted in self.cluster.node_pools.items():
            have = [
                c
                for c in claims
                if (c["metadata"].get("labels") or {}).get(LABEL_NODEPOOL) == pool
                and not c["metadata"].get("deletionTimestamp")
                and is_true(c, "Initialized")
                and instance_id_of((c.get("status") or {}).get("providerID", "")) in live
                and c["metadata"]["name"] in self.nodes
                and self.nodes[c["metadata"]["name"]].status().get("phase") == "ready"
            ]
            if len(have) < wanted:
                return False
        return True

    # -- one pass ------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        self.passes += 1
        classes = self._list(AWS_GROUP, "ec2nodeclasses")
        pools = self._list(CORE_GROUP, "nodepools")
        if not self._bootstrapped:
            self._bootstrapped = True
            if not classes and not pools:
                self.create_defaults()
                classes = self._list(AWS_GROUP, "ec2nodeclasses")
                pools = self._list(CORE_GROUP, "nodepools")
        classes_by_name = {c["metadata"]["name"]: self.reconcile_node_class(c) for c in classes}
        pools_by_name = {p["metadata"]["name"]: self.reconcile_node_pool(p, classes_by_name) for p in pools}
        claims = self._list(CORE_GROUP, "nodeclaims")
        nodes = self._core_json(self.core.list_node).get("items") or []
        nodes_by_provider = {(n.get("spec") or {}).get("providerID"): n for n in nodes}
        for claim in claims:
            try:
                self.reconcile_claim(claim, pools_by_name, classes_by_name, nodes_by_provider)
            except Exception:
                self.log(f"karpenter: nodeclaim {claim['metadata']['name']}:\n" + traceback.format_exc())
        self.disrupt(pools_by_name, claims, nodes_by_provider)
        claims = self._list(CORE_GROUP, "nodeclaims")  # what disrupt() created or deleted counts now
        self.provision(pools_by_name, classes_by_name, claims)
        self.collect_orphans(claims, nodes)
        LabScheduler(self.core, self.log).bind_pending(nodes)
        self._forget_gone(claims)

    # -- defaults: the lab cluster before the runbook ---------------------------------------------------
    def default_objects(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        v, cluster = self.flavor.version, self.cluster.cluster_name
        selector = [{"tags": {DISCOVERY_TAG: cluster}}]
        spec: dict[str, Any] = {
            "role": f"KarpenterNodeRole-{cluster}",
            "subnetSelectorTerms": selector,
            "securityGroupSelectorTerms": selector,
            "userData": DEFAULT_USER_DATA,
            "tags": {"lab.eks-mirror-runbook/cluster": cluster},
        }
        if v == "v1":
            spec["amiSelectorTerms"] = [{"alias": "al2023@latest"}]
        else:
            spec["amiFamily"] = "AL2023"
        node_class = {
            "apiVersion": f"{AWS_GROUP}/{v}",
            "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": spec,
        }
        pools = []
        for name in sorted(self.cluster.node_pools):
            disruption: dict[str, Any] = {"budgets": [{"nodes": "10%"}]}
            if v == "v1":
                disruption.update(consolidationPolicy="WhenEmptyOrUnderutilized", consolidateAfter="1m")
            else:
                disruption.update(consolidationPolicy="WhenUnderutilized", expireAfter="720h")
            pools.append(
                {
                    "apiVersion": f"{CORE_GROUP}/{v}",
                    "kind": "NodePool",
                    "metadata": {"name": name},
                    "spec": {
                        "template": {
                            "metadata": {"labels": {"lab.eks-mirror-runbook/pool": name}},
                            "spec": {
                                "nodeClassRef": self.flavor.node_class_ref("default"),
                                "requirements": [
                                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                                    {"key": LABEL_CAPACITY_TYPE, "operator": "In", "values": ["on-demand"]},
                                    {
                                        "key": LABEL_INSTANCE_TYPE,
                                        "operator": "In",
                                        "values": [DEFAULT_INSTANCE_TYPE],
                                    },
                                ],
                            },
                        },
                        "disruption": disruption,
                    },
                }
            )
        return node_class, pools

    def create_defaults(self) -> None:
        node_class, pools = self.default_objects()
        self.ec2.tag_discovery(self.cluster.cluster_name)
        self.custom.create_cluster_custom_object(AWS_GROUP, self.flavor.version, "ec2nodeclasses", node_class)
        for pool in pools:
            self.custom.create_cluster_custom_object(CORE_GROUP, self.flavor.version, "nodepools", pool)
        self.log(
            "karpenter: created the lab's EC2NodeClass default and NodePool(s) "
            + ", ".join(sorted(self.cluster.node_pools))
        )

    # -- node classes and pools ----------------------------------------------------------------------------
    def reconcile_node_class(self, node_class: dict[str, Any]) -> dict[str, Any]:
        meta, spec = node_class["metadata"], node_class.get("spec") or {}
        annotations = meta.get("annotations") or {}
        wanted = {
            ANN_NODECLASS_HASH: nodeclass_hash(spec),
            ANN_NODECLASS_HASH_VERSION: self.flavor.nodeclass_hash_version,
        }
        if any(annotations.get(k) != v for k, v in wanted.items()):
            node_class = self._patch(
                AWS_GROUP, "ec2nodeclasses", meta["name"], {"metadata": {"annotations": wanted}}
            )
        status = dict(node_class.get("status") or {})
        conditions = json.loads(json.dumps(status.get("conditions") or []))
        family = node_class_family(spec)
        try:
            resolved = {
                "subnets": self.ec2.subnets(spec.get("subnetSelectorTerms") or []),
                "securityGroups": self.ec2.security_groups(spec.get("securityGroupSelectorTerms") or []),
                "amis": self.ec2.amis(family, spec.get("amiSelectorTerms") or []),
            }
            error = ""
        except Exception as exc:
            resolved, error = {}, f"{type(exc).__name__}: {exc}"
        gen = meta.get("generation")
        for key, kind in (
            ("subnets", "SubnetsReady"),
            ("securityGroups", "SecurityGroupsReady"),
            ("amis", "AMIsReady"),
        ):
            if resolved.get(key):
                set_condition(conditions, kind, "True", kind, "", gen)
            else:
                label = {"subnets": "Subnet", "securityGroups": "SecurityGroup", "amis": "AMI"}[key]
                set_condition(
                    conditions,
                    kind,
                    "False",
                    f"{label}sNotFound",
                    error or f"{label}SelectorTerms did not match any {label}s",
                    gen,
                )
        set_condition(conditions, "InstanceProfileReady", "True", "InstanceProfileReady", "", gen)
        set_condition(conditions, "ValidationSucceeded", "True", "ValidationSucceeded", "", gen)
        ready = all(c["status"] == "True" for c in conditions if c["type"] != "Ready")
        set_condition(
            conditions,
            "Ready",
            "True" if ready else "False",
            "Ready" if ready else "UnhealthyDependents",
            ""
            if ready
            else ", ".join(
                f"{c['type']}={c['status']}"
                for c in conditions
                if c["type"] != "Ready" and c["status"] != "True"
            ),
            gen,
        )
        new_status = {
            **resolved,
            "instanceProfile": f"{self.cluster.cluster_name}_{stable_hash(spec.get('role', ''))}",
            "conditions": conditions,
        }
        if not resolved:
            new_status = {"instanceProfile": new_status["instanceProfile"], "conditions": conditions}
        if any(status.get(k) != v for k, v in new_status.items()):
            node_class = self._patch(
                AWS_GROUP, "ec2nodeclasses", meta["name"], {"status": new_status}, status=True
            )
        return node_class

    def _class_of(self, pool: dict[str, Any]) -> str:
        ref = (((pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {}
        return ref.get("name", "")

    def reconcile_node_pool(self, pool: dict[str, Any], classes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        meta = pool["metadata"]
        annotations = meta.get("annotations") or {}
        wanted = {
            ANN_NODEPOOL_HASH: nodepool_hash(pool.get("spec") or {}),
            ANN_NODEPOOL_HASH_VERSION: self.flavor.nodepool_hash_version,
        }
        if any(annotations.get(k) != v for k, v in wanted.items()):
            pool = self._patch(CORE_GROUP, "nodepools", meta["name"], {"metadata": {"annotations": wanted}})
        if self.flavor.version != "v1":
            return pool  # a v1beta1 NodePool has no status.conditions (v0.37 CRD: status.resources only)
        conditions = json.loads(json.dumps((pool.get("status") or {}).get("conditions") or []))
        node_class = classes.get(self._class_of(pool))
        class_ready = bool(node_class) and is_true(node_class, "Ready")
        gen = meta.get("generation")
        set_condition(conditions, "ValidationSucceeded", "True", "ValidationSucceeded", "", gen)
        set_condition(
            conditions,
            "NodeClassReady",
            "True" if class_ready else "False",
            "NodeClassReady" if class_ready else "NodeClassNotReady",
            "" if class_ready else f"EC2NodeClass {self._class_of(pool)!r} not found or not ready",
            gen,
        )
        set_condition(
            conditions,
            "Ready",
            "True" if class_ready else "False",
            "Ready" if class_ready else "UnhealthyDependents",
            "" if class_ready else "NodeClassReady=False",
            gen,
        )
        if conditions != (pool.get("status") or {}).get("conditions"):
            pool = self._patch(
                CORE_GROUP, "nodepools", meta["name"], {"status": {"conditions": conditions}}, status=True
            )
        return pool

    # -- provisioning ----------------------------------------------------------------------------------
    def _in_command(self, name: str) -> bool:
        return any(name in c.candidates for c in self.commands)

    def provision(
        self,
        pools: dict[str, dict[str, Any]],
        classes: dict[str, dict[str, Any]],
        claims: list[dict[str, Any]],
    ) -> None:
        for name, pool in pools.items():
            if not is_true(classes.get(self._class_of(pool)), "Ready"):
                continue  # Karpenter provisions only for a NodePool whose node class is ready
            wanted = self.cluster.node_pools.get(name, 0)
            live = [
                c
                for c in claims
                if (c["metadata"].get("labels") or {}).get(LABEL_NODEPOOL) == name
                and not c["metadata"].get("deletionTimestamp")
            ]
            effective = [c for c in live if not self._in_command(c["metadata"]["name"])]
            for _ in range(wanted - len(effective)):
                self.create_claim(pool)
            if len(effective) > wanted:
                replacing = {r for cmd in self.commands for r in cmd.replacements}
                extra = sorted(
                    (c for c in effective if c["metadata"]["name"] not in replacing),
                    key=lambda c: (is_true(c, "Initialized"), c["metadata"].get("creationTimestamp", "")),
                )
                for claim in extra[: len(effective) - wanted]:
                    self.log(
                        f"karpenter: NodePool {name} wants {wanted} node(s);"
                        f" deleting {claim['metadata']['name']}"
                    )
                    self._delete_claim(claim["metadata"]["name"], claim)

    def create_claim(self, pool: dict[str, Any]) -> dict[str, Any]:
        meta = pool["metadata"]
        template = (pool.get("spec") or {}).get("template") or {}
        tmeta, tspec = template.get("metadata") or {}, template.get("spec") or {}
        v = self.flavor.version
        requirements = list(tspec.get("requirements") or [])
        requirements.append({"key": LABEL_NODEPOOL, "operator": "In", "values": [meta["name"]]})
        spec: dict[str, Any] = {
            "nodeClassRef": tspec.get("nodeClassRef"),
            "requirements": requirements,
            "resources": {"requests": {}},
        }
        for key in ("taints", "startupTaints", "expireAfter", "terminationGracePeriod", "kubelet"):
            if key in tspec:
                spec[key] = tspec[key]
        body = {
            "apiVersion": f"{CORE_GROUP}/{v}",
            "kind": "NodeClaim",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "labels": {
                    **(tmeta.get("labels") or {}),
                    LABEL_NODEPOOL: meta["name"],
                    LABEL_NODECLASS: self._class_of(pool),
                },
                "annotations": {
                    **(tmeta.get("annotations") or {}),
                    ANN_NODEPOOL_HASH: (meta.get("annotations") or {}).get(ANN_NODEPOOL_HASH, ""),
                    ANN_NODEPOOL_HASH_VERSION: self.flavor.nodepool_hash_version,
                },
                "ownerReferences": [
                    {
                        "apiVersion": f"{CORE_GROUP}/{v}",
                        "kind": "NodePool",
                        "name": meta["name"],
                        "uid": meta.get("uid"),
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": [TERMINATION_FINALIZER],
            },
            "spec": spec,
        }
        claim = self.custom.create_cluster_custom_object(CORE_GROUP, v, "nodeclaims", body)
        conditions: list[dict[str, Any]] = []
        for type_ in ("Launched", "Registered", "Initialized"):
            set_condition(
                conditions, type_, "Unknown", "AwaitingReconciliation", "object is awaiting reconciliation"
            )
        set_condition(
            conditions, "Ready", "Unknown", "AwaitingReconciliation", "object is awaiting reconciliation"
        )
        self._patch_claim_status(claim, {"conditions": conditions})
        self.log(f"karpenter: created nodeclaim {claim['metadata']['name']} (nodepool {meta['name']})")
        return claim

    # -- nodeclaim lifecycle ---------------------------------------------------------------------------
    def reconcile_claim(
        self,
        claim: dict[str, Any],
        pools: dict[str, dict[str, Any]],
        classes: dict[str, dict[str, Any]],
        nodes_by_provider: dict[str | None, dict[str, Any]],
    ) -> None:
        meta = claim["metadata"]
        name = meta["name"]
        if meta.get("deletionTimestamp"):
            if name not in self._terminating:
                self._terminating.add(name)
                self._pool.submit(
                    self._terminate,
                    claim,
                    nodes_by_provider.get((claim.get("status") or {}).get("providerID")),
                )
            return
        status = claim.get("status") or {}
        conditions = json.loads(json.dumps(status.get("conditions") or []))
        pool = pools.get((meta.get("labels") or {}).get(LABEL_NODEPOOL, ""))
        node_class = classes.get(((claim.get("spec") or {}).get("nodeClassRef") or {}).get("name", ""))
        if not status.get("providerID"):
            if node_class is None or not is_true(node_class, "Ready"):
                return
            if time.monotonic() < self._launch_retry.get(name, 0):
                return
            self.launch(claim, pool, node_class)
            return
        provider_id = status["providerID"]
        if self._instance_gone(instance_id_of(provider_id)):
            # Karpenter's garbage collection (kubernetes-sigs/karpenter
            # pkg/controllers/nodeclaim/garbagecollection/controller.go): a NodeClaim whose instance the cloud
            # provider no longer lists is deleted; termination then removes its Node, and provision() below
            # launches a new NodeClaim for the NodePool's capacity. This is how the lab comes back after
            # `lab down` + `lab up`: moto starts empty, so every instance is gone, and fresh nodes replace
            # them.
            # (Upstream spares a claim whose Node is still Ready, a kubelet still reporting; the lab's API has
            # no node lifecycle controller to turn a silent Node Unknown, so that check is not made here.)
            self.log(f"karpenter: instance of nodeclaim {name} no longer exists; deleting the nodeclaim")
            self._lose_machine(name, nodes_by_provider.get(provider_id))
            self._delete_claim(name, claim)
            return
        previous = self.nodes.get(name)
        if previous is None or (
            not previous.running and previous.status().get("phase") in ("ready", "stopped")
        ):
            # no lab node in this process for a launched instance (e.g. after a restart), or its node ended
            # after booting: the instance still runs, so boot it again, like a reboot
            instance = self.ec2.instance(instance_id_of(provider_id))
            if instance is None:
                self._delete_claim(name, claim)
                return
            self.boot(claim, node_class, instance)
        changed = False
        node = nodes_by_provider.get(provider_id)
        lab_node = self.nodes.get(name)
        if node is None:
            st = lab_node.status() if lab_node else {}
            if lab_node is not None and (st.get("phase") == "failed" or not lab_node.running):
                first = self._failed_at.setdefault(name, time.monotonic())
                message = f"lab node failed to start: {st.get('error') or 'process exited'}"
                changed |= set_condition(conditions, "Registered", "False", "NodeFailed", message[:1000])
                if changed:
                    self._claim_event(
                        claim,
                        "Warning",
                        "FailedLaunching",
                        f"{message}; log tail:\n{lab_node.log_tail(15)}"[:4000],
                    )
                if time.monotonic() - first > self.registration_ttl_s:
                    self.log(
                        f"karpenter: nodeclaim {name} did not register within"
                        f" {self.registration_ttl_s:.0f} s;"
                        " deleting it"
                    )
                    self._delete_claim(name)
                    return
        else:
            self.sync_node(claim, node)
            if not status.get("nodeName") or not is_true(claim, "Registered"):
                status["nodeName"] = node["metadata"]["name"]
                set_condition(conditions, "Registered", "True", "Registered")
                changed = True
            if (
                is_true(node, "Ready")
                and not _has_startup_taints(claim, node)
                and not is_true(claim, "Initialized")
            ):
                changed |= set_condition(conditions, "Initialized", "True", "Initialized")
                self._merge_node(
                    node["metadata"]["name"], {"metadata": {"labels": {LABEL_INITIALIZED: "true"}}}
                )
                self._patch(
                    CORE_GROUP, "nodeclaims", name, {"metadata": {"labels": {LABEL_INITIALIZED: "true"}}}
                )
        changed |= self._set_ready(conditions, meta.get("generation"))
        changed |= self._set_drift(claim, conditions, pool, node_class)
        if changed:
            update = {"conditions": conditions}
            if status.get("nodeName"):
                update["nodeName"] = status["nodeName"]
            self._patch_claim_status(claim, update)

    def _live_instances(self, max_age_s: float = 5.0) -> set[str]:
        """The cluster's live instance ids, from a listing at most `max_age_s` old (one DescribeInstances)."""
        listed_at, live = self._live
        if time.monotonic() - listed_at > max_age_s:
            listed_at, live = time.monotonic(), self.ec2.live_instance_ids(self.cluster.cluster_name)
            self._live = (listed_at, live)
        return live

    def _lose_machine(self, name: str, node: dict[str, Any] | None) -> None:
        """What a vanished instance takes with it, at once and before this pass provisions replacements: its
        lab
        node (the machine: its kubelet stops reporting, its disk is gone) and so its Node and the Node's Pods.
        At once because moto hands a new instance the private IP, and so the Node name, of a vanished one."""
        from kubernetes.client.rest import ApiException

        lab_node = self.nodes.pop(name, None)
        if lab_node is not None:
            lab_node.stop(timeout=2)
            lab_node.discard_disk()
        if node is not None:
            node_name = node["metadata"]["name"]
            self._merge_node(node_name, {"metadata": {"finalizers": None}})
            with contextlib.suppress(ApiException):
                self.core.delete_node(node_name, _preload_content=False)
            self._collect_pods_of(node_name)

    def _instance_gone(self, instance_id: str, max_age_s: float = 5.0) -> bool:
        """True when a fresh listing of the cluster's instances (at most `max_age_s` old) lacks this one."""
        live = self._live_instances(max_age_s)
        return instance_id not in live and self._launched_at.get(instance_id, 0.0) < self._live[0]

    @staticmethod
    def _set_ready(conditions: list[dict[str, Any]], generation: int | None) -> bool:
        deps = {
            c["type"]: c["status"]
            for c in conditions
            if c["type"] in ("Launched", "Registered", "Initialized")
        }
        if deps and all(v == "True" for v in deps.values()) and len(deps) == 3:
            return set_condition(conditions, "Ready", "True", "Ready", "", generation)
        message = ", ".join(f"{t}={s}" for t, s in sorted(deps.items()) if s != "True")
        status = "False" if "False" in deps.values() else "Unknown"
        return set_condition(conditions, "Ready", status, "UnhealthyDependents", message, generation)

    def drift_reason(
        self, claim: dict[str, Any], pool: dict[str, Any] | None, node_class: dict[str, Any] | None
    ) -> str:
        """areStaticFieldsDrifted of both providers: hashes present on both sides, same version, different."""
        ann = claim["metadata"].get("annotations") or {}
        for owner, key, version_key, reason in (
            (pool, ANN_NODEPOOL_HASH, ANN_NODEPOOL_HASH_VERSION, NODEPOOL_DRIFTED),
            (node_class, ANN_NODECLASS_HASH, ANN_NODECLASS_HASH_VERSION, NODECLASS_DRIFT),
        ):
            if owner is None:
                continue
            own = owner["metadata"].get("annotations") or {}
            if not all((own.get(key), own.get(version_key), ann.get(key), ann.get(version_key))):
                continue
            if own[version_key] == ann[version_key] and own[key] != ann[key]:
                return reason
        return ""

    def _set_drift(
        self,
        claim: dict[str, Any],
        conditions: list[dict[str, Any]],
        pool: dict[str, Any] | None,
        node_class: dict[str, Any] | None,
    ) -> bool:
        if not is_true(claim, "Launched") and not any(
            c["type"] == "Launched" and c["status"] == "True" for c in conditions
        ):
            return drop_condition(conditions, "Drifted")
        reason = self.drift_reason(claim, pool, node_class)
        if not reason:
            return drop_condition(conditions, "Drifted")
        return set_condition(conditions, "Drifted", "True", reason, reason)

    def launch(self, claim: dict[str, Any], pool: dict[str, Any] | None, node_class: dict[str, Any]) -> None:
        """CloudProvider.Create: RunInstances with Karpenter's userData; stamp the class hash; Launched."""
        meta, name = claim["metadata"], claim["metadata"]["name"]
        cstatus = node_class.get("status") or {}
        family = node_class_family(node_class.get("spec") or {})
        instance_type = instance_type_for((claim.get("spec") or {}).get("requirements") or [])
        subnet = (cstatus.get("subnets") or [{}])[0]
        image = (cstatus.get("amis") or [{}])[0]
        labels = self._claim_node_labels(claim, instance_type, subnet.get("zone", f"{self.cluster.region}a"))
        taints = self._register_taints(claim)
        capacity = INSTANCE_TYPES[instance_type]
        user_data = karpenter_user_data(
            family,
            (node_class.get("spec") or {}).get("userData") or "",
            self.cluster.cluster_name,
            self.cluster.api_server,
            labels,
            taints,
            capacity["pods"],
        )
        tags = {
            **((node_class.get("spec") or {}).get("tags") or {}),
            LABEL_NODEPOOL: labels[LABEL_NODEPOOL],
            "karpenter.sh/nodeclaim": name,
            LABEL_NODECLASS: node_class["metadata"]["name"],
            f"kubernetes.io/cluster/{self.cluster.cluster_name}": "owned",
            "eks:eks-cluster-name": self.cluster.cluster_name,
            "Name": f"{labels[LABEL_NODEPOOL]}/{name}",
        }
        conditions = json.loads(json.dumps((claim.get("status") or {}).get("conditions") or []))
        try:
            instance = self.ec2.launch(
                image.get("id", ""),
                instance_type,
                subnet.get("id", ""),
                [g["id"] for g in cstatus.get("securityGroups") or []],
                user_data,
                tags,
            )
        except Exception as exc:
            self._launch_retry[name] = time.monotonic() + 5
            if set_condition(
                conditions, "Launched", "False", "LaunchFailed", f"{type(exc).__name__}: {exc}"[:1000]
            ):
                self._patch_claim_status(claim, {"conditions": conditions})
                self._claim_event(claim, "Warning", "LaunchFailed", f"creating instance, {exc}"[:1000])
            return
        self._launched_at[instance["InstanceId"]] = time.monotonic()
        zone = instance["Placement"]["AvailabilityZone"]
        provider_id = f"aws:///{zone}/{instance['InstanceId']}"
        self._patch(
            CORE_GROUP,
            "nodeclaims",
            name,
            {
                "metadata": {
                    "labels": {k: v for k, v in labels.items() if k != LABEL_HOSTNAME},
                    "annotations": {
                        ANN_NODECLASS_HASH: (node_class["metadata"].get("annotations") or {}).get(
                            ANN_NODECLASS_HASH, ""
                        ),
                        ANN_NODECLASS_HASH_VERSION: self.flavor.nodeclass_hash_version,
                    },
                }
            },
        )
        set_condition(conditions, "Launched", "True", "Launched", "", meta.get("generation"))
        self._set_ready(conditions, meta.get("generation"))
        allocatable = dict(capacity)
        self._patch_claim_status(
            claim,
            {
                "providerID": provider_id,
                "imageID": image.get("id", ""),
                "capacity": dict(capacity),
                "allocatable": allocatable,
                "conditions": conditions,
            },
        )
        claim = self.custom.get_cluster_custom_object(CORE_GROUP, self.flavor.version, "nodeclaims", name)
        self.log(f"karpenter: launched nodeclaim {name}: {instance['InstanceId']} {instance_type} in {zone}")
        self.boot(claim, node_class, instance)

    def _claim_node_labels(self, claim: dict[str, Any], instance_type: str, zone: str) -> dict[str, str]:
        labels = dict(claim["metadata"].get("labels") or {})
        labels.update(
            {
                LABEL_INSTANCE_TYPE: instance_type,
                "beta.kubernetes.io/instance-type": instance_type,
                LABEL_ZONE: zone,
                "failure-domain.beta.kubernetes.io/zone": zone,
                LABEL_REGION: self.cluster.region,
                LABEL_CAPACITY_TYPE: "on-demand",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "karpenter.k8s.aws/instance-family": instance_type.split(".")[0],
                "karpenter.k8s.aws/instance-size": instance_type.split(".")[1],
            }
        )
        return labels

    def _register_taints(self, claim: dict[str, Any]) -> list[dict[str, str]]:
        spec = claim.get("spec") or {}
        taints = [dict(t) for t in (spec.get("taints") or []) + (spec.get("startupTaints") or [])]
        if self.flavor.unregistered_taint:
            taints.append(dict(self.flavor.unregistered_taint))
        return taints

    def boot(
        self, claim: dict[str, Any], node_class: dict[str, Any] | None, instance: dict[str, Any]
    ) -> None:
        """Start the lab node of a launched instance (also after a restart of this process: a reboot)."""
        from runbook_lab.node import LabNode, NodeSpec

        name = claim["metadata"]["name"]
        family = node_class_family((node_class or {}).get("spec") or {})
        instance_type = instance.get("InstanceType", DEFAULT_INSTANCE_TYPE)
        zone = instance["Placement"]["AvailabilityZone"]
        node_name = (
            instance.get("PrivateDnsName")
            or f"ip-{instance['PrivateIpAddress'].replace('.', '-')}.ec2.internal"
        )
        labels = self._claim_node_labels(claim, instance_type, zone)
        labels[LABEL_HOSTNAME] = node_name
        spec = NodeSpec(
            name=node_name,
            dir=str(self.nodes_dir / name),
            user_data=self.ec2.user_data(instance["InstanceId"]),
            ami_family=family,
            kubeconfig=self.cluster.kubeconfig,
            ports=list(self.cluster.ports),
            hosts=dict(self.cluster.hosts),
            lab_certs=dict(self.cluster.lab_certs),
            labels=labels,
            taints=self._register_taints(claim),
            provider_id=f"aws:///{zone}/{instance['InstanceId']}",
            internal_ip=instance.get("PrivateIpAddress", "127.0.0.1"),
            instance_type=instance_type,
            capacity=dict(INSTANCE_TYPES.get(instance_type, INSTANCE_TYPES[DEFAULT_INSTANCE_TYPE])),
            kubelet_version=self.cluster.kubelet_version,
            userdata_env=dict(self.cluster.userdata_env),
            heartbeat_s=self.cluster.heartbeat_s,
            image_maximum_gc_age_s=self.cluster.image_maximum_gc_age_s,
        )
        previous = self.nodes.pop(name, None)
        if previous is not None:
            previous.stop()  # releases its bridge sockets before the new boot binds them
        node = LabNode(spec)
        self.nodes[name] = node
        try:
            node.start()
        except Exception as exc:
            self.log(f"karpenter: lab node for {name} failed to start: {exc}")
        self.log(f"karpenter: booting lab node {node_name} for nodeclaim {name} (pid {node.pid})")

    def _merge_node(self, name: str, body: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.patch_node(name, body, _content_type=MERGE_PATCH, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def sync_node(self, claim: dict[str, Any], node: dict[str, Any]) -> None:
        """Registration: claim labels/annotations/taints onto the Node, finalizer and owner, unregistered
        taint off."""
        meta = node["metadata"]
        labels = {**(claim["metadata"].get("labels") or {}), LABEL_REGISTERED: "true"}
        missing_labels = {k: v for k, v in labels.items() if (meta.get("labels") or {}).get(k) != v}
        finalizers = list(meta.get("finalizers") or [])
        taints = [
            t
            for t in (node.get("spec") or {}).get("taints") or []
            if not (self.flavor.unregistered_taint and t.get("key") == self.flavor.unregistered_taint["key"])
        ]
        body: dict[str, Any] = {}
        if missing_labels:
            body.setdefault("metadata", {})["labels"] = missing_labels
        if TERMINATION_FINALIZER not in finalizers:
            body.setdefault("metadata", {})["finalizers"] = [*finalizers, TERMINATION_FINALIZER]
        if not meta.get("ownerReferences"):
            body.setdefault("metadata", {})["ownerReferences"] = [
                {
                    "apiVersion": f"{CORE_GROUP}/{self.flavor.version}",
                    "kind": "NodeClaim",
                    "name": claim["metadata"]["name"],
                    "uid": claim["metadata"]["uid"],
                    "blockOwnerDeletion": True,
                }
            ]
        if taints != ((node.get("spec") or {}).get("taints") or []):
            body["spec"] = {"taints": taints or None}
        if body:
            self._merge_node(meta["name"], body)

    # -- disruption ------------------------------------------------------------------------------------
    def disrupt(
        self,
        pools: dict[str, dict[str, Any]],
        claims: list[dict[str, Any]],
        nodes_by_provider: dict[str | None, dict[str, Any]],
    ) -> None:
        by_name = {c["metadata"]["name"]: c for c in claims}
        node_of = {
            c["metadata"]["name"]: nodes_by_provider.get((c.get("status") or {}).get("providerID"))
            for c in claims
        }
        for command in list(self.commands):
            self._advance(command, by_name, node_of)
        for pool_name, pool in pools.items():
            members = [
                c for c in claims if (c["metadata"].get("labels") or {}).get(LABEL_NODEPOOL) == pool_name
            ]
            initialized = [c for c in members if is_true(c, "Initialized")]
            disrupting = [
                c
                for c in initialized
                if c["metadata"].get("deletionTimestamp")
                or self._in_command(c["metadata"]["name"])
                or not is_true(node_of.get(c["metadata"]["name"]), "Ready")
            ]
            candidates = [
                c
                for c in initialized
                if is_true(c, "Drifted")
                and not c["metadata"].get("deletionTimestamp")
                and not self._in_command(c["metadata"]["name"])
                and not _do_not_disrupt(c, node_of.get(c["metadata"]["name"]))
            ]
            if not candidates:
                continue
            allowed = allowed_disruptions(pool, len(initialized), len(disrupting))
            if allowed <= 0:
                self.event(
                    pool,
                    "NodePool",
                    f"{CORE_GROUP}/{self.flavor.version}",
                    "Normal",
                    "DisruptionBlocked",
                    f"No allowed disruptions for disruption reason {REASON_DRIFTED} due to blocking budget",
                )
                continue
            for claim in sorted(candidates, key=lambda c: c["metadata"].get("creationTimestamp", ""))[
                :allowed
            ]:
                self._begin(pool, claim, node_of.get(claim["metadata"]["name"]))

    def _begin(self, pool: dict[str, Any], claim: dict[str, Any], node: dict[str, Any] | None) -> None:
        command = Command(pool["metadata"]["name"], REASON_DRIFTED, [claim["metadata"]["name"]])
        if node is not None:
            self._taint(node, add=True)
        replacement = self.create_claim(pool)
        command.replacements.append(replacement["metadata"]["name"])
        self._claim_event(
            replacement, "Normal", "DisruptionLaunching", f"Launching NodeClaim: {REASON_DRIFTED}"
        )
        self.commands.append(command)

    def _advance(
        self, command: Command, claims: dict[str, dict[str, Any]], node_of: dict[str, dict[str, Any] | None]
    ) -> None:
        replacements = [claims.get(r) for r in command.replacements]
        if any(r is None or r["metadata"].get("deletionTimestamp") for r in replacements):
            # a replacement failed: un-taint the candidates and start over from the next pass
            for name in command.candidates:
                node = node_of.get(name)
                if node is not None:
                    self._taint(node, add=False)
            self.commands.remove(command)
            self.log(f"karpenter: disruption of {', '.join(command.candidates)} abandoned (replacement gone)")
            return
        if not all(is_true(r, "Initialized") for r in replacements):
            for r in replacements:
                if r is not None and is_true(r, "Launched"):
                    self._claim_event(
                        r,
                        "Normal",
                        "DisruptionWaitingReadiness",
                        "Waiting on readiness to continue disruption",
                    )
            return
        for name in command.candidates:
            claim = claims.get(name)
            if claim is None:
                continue
            node = node_of.get(name)
            if node is not None:
                self.event(
                    node,
                    "Node",
                    "v1",
                    "Normal",
                    "DisruptionTerminating",
                    f"Disrupting Node: {command.reason}",
                )
            self._claim_event(
                claim, "Normal", "DisruptionTerminating", f"Disrupting NodeClaim: {command.reason}"
            )
            self._delete_claim(name, claim)
        self.commands.remove(command)

    def _taint(self, node: dict[str, Any], add: bool) -> None:
        taint = self.flavor.disrupted_taint
        current = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != taint["key"]]
        wanted = [*current, dict(taint)] if add else current
        if wanted != ((node.get("spec") or {}).get("taints") or []):
            self._merge_node(node["metadata"]["name"], {"spec": {"taints": wanted or None}})
            node.setdefault("spec", {})["taints"] = wanted

    def _delete_claim(self, name: str, seen: dict[str, Any] | None = None) -> None:
        """Delete a NodeClaim (its finalizer keeps it until terminated); `seen`, this pass's copy of it, is
        marked
        too, so the rest of the pass counts it as being deleted."""
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_cluster_custom_object(CORE_GROUP, self.flavor.version, "nodeclaims", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if seen is not None:
            seen["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        self._wake.set()

    # -- termination -----------------------------------------------------------------------------------
    def _terminate(self, claim: dict[str, Any], node: dict[str, Any] | None) -> None:
        from kubernetes.client.rest import ApiException

        name = claim["metadata"]["name"]
        try:
            node = self._node_of(claim, node)
            lab_node = self.nodes.get(name)
            # Drain only a node whose kubelet runs (its lab node, in this process): no kubelet would confirm
            # the evictions of a node that is not alive, and Karpenter's node termination likewise skips the
            # graceful drain when the Node is not Ready and its instance is gone (kubernetes-sigs/karpenter
            # pkg/controllers/node/termination/controller.go); its Pods are collected with the Node below.
            if node is not None and lab_node is not None and lab_node.running:
                self._taint(node, add=True)
                self._drain(node["metadata"]["name"])
            lab_node = self.nodes.pop(name, None)
            if lab_node is not None:
                lab_node.stop()
                lab_node.discard_disk()  # like an instance's root volume (logs kept for the record)
            else:
                self._discard_stale_disk(name)
            instance_id = instance_id_of((claim.get("status") or {}).get("providerID", ""))
            if instance_id:
                self.ec2.terminate(instance_id)
            if node is not None:
                node_name = node["metadata"]["name"]
                self._merge_node(node_name, {"metadata": {"finalizers": None}})
                with contextlib.suppress(ApiException):
                    self.core.delete_node(node_name, _preload_content=False)
                self._collect_pods_of(node_name)
            self._patch(CORE_GROUP, "nodeclaims", name, {"metadata": {"finalizers": None}})
            self.log(f"karpenter: terminated nodeclaim {name}")
        except ApiException as exc:
            if exc.status != 404:
                self.log(f"karpenter: terminating {name} failed: {exc}")
        except Exception:
            self.log(f"karpenter: terminating {name} failed:\n" + traceback.format_exc())
        finally:
            self._terminating.discard(name)
            self._wake.set()

    def _node_of(self, claim: dict[str, Any], seen: dict[str, Any] | None) -> dict[str, Any] | None:
        """The claim's Node as it is now, or None: a Node is the claim's while it carries the claim's
        providerID
        (Karpenter's NodeForNodeClaim matches by providerID). After moto restarted, a new instance can get a
        terminated one's private IP, so its Node takes the old Node's name; that Node is no longer this
        claim's."""
        from kubernetes.client.rest import ApiException

        if seen is None:
            return None
        provider_id = (claim.get("status") or {}).get("providerID")
        try:
            node = self._core_json(self.core.read_node, seen["metadata"]["name"])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return node if provider_id and (node.get("spec") or {}).get("providerID") == provider_id else None

    def _discard_stale_disk(self, name: str) -> None:
        """The disk of a claim's lab node left by an earlier run of this process (start() stopped its
        processes)."""
        from runbook_lab.node import discard_disk

        if (self.nodes_dir / name).is_dir():
            discard_disk(self.nodes_dir / name)

    def _pods_on(self, node_name: str) -> list[dict[str, Any]]:
        return (
            self._core_json(
                self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node_name}"
            ).get("items")
            or []
        )

    def _drain(self, node_name: str, timeout: float = 15.0) -> None:
        """Evict (delete gracefully) the node's running Pods; the node's kubelet confirms the deletions."""
        from kubernetes.client.rest import ApiException

        pods = [
            p
            for p in self._pods_on(node_name)
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        for pod in pods:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(
                    pod["metadata"]["name"], pod["metadata"]["namespace"], _preload_content=False
                )
        deadline = time.monotonic() + timeout
        while pods and time.monotonic() < deadline:
            alive = {p["metadata"]["uid"] for p in self._pods_on(node_name)}
            if not alive & {p["metadata"]["uid"] for p in pods}:
                return
            time.sleep(0.2)

    def _collect_pods_of(self, node_name: str) -> None:
        """Pod GC: Pods bound to a Node that no longer exists are deleted at once."""
        from kubernetes.client.rest import ApiException

        for pod in self._pods_on(node_name):
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(
                    pod["metadata"]["name"],
                    pod["metadata"]["namespace"],
                    grace_period_seconds=0,
                    _preload_content=False,
                )

    def collect_orphans(self, claims: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
        """Nodes Karpenter owns whose NodeClaim is gone are removed (with their Pods); stray taints are
        dropped."""
        providers = {(c.get("status") or {}).get("providerID") for c in claims}
        in_commands = {name for cmd in self.commands for name in cmd.candidates}
        claim_by_provider = {(c.get("status") or {}).get("providerID"): c for c in claims}
        for node in nodes:
            meta = node["metadata"]
            provider = (node.get("spec") or {}).get("providerID")
            if TERMINATION_FINALIZER in (meta.get("finalizers") or []) and provider not in providers:
                self._merge_node(meta["name"], {"metadata": {"finalizers": None}})
                with contextlib.suppress(Exception):
                    self.core.delete_node(meta["name"], _preload_content=False)
                self._collect_pods_of(meta["name"])
                continue
            claim = claim_by_provider.get(provider)
            if (
                claim is not None
                and not claim["metadata"].get("deletionTimestamp")
                and claim["metadata"]["name"] not in in_commands
                and any(
                    t.get("key") == self.flavor.disrupted_taint["key"]
                    for t in (node.get("spec") or {}).get("taints") or []
                )
            ):
                self._taint(node, add=False)  # left by a disruption this process no longer tracks

    def _forget_gone(self, claims: list[dict[str, Any]]) -> None:
        names = {c["metadata"]["name"] for c in claims}
        for name in list(self.nodes):
            if name not in names and name not in self._terminating:
                node = self.nodes.pop(name)
                self._pool.submit(node.stop)
        for table in (self._failed_at, self._launch_retry):
            for name in list(table):
                if name not in names:
                    table.pop(name, None)


def _has_startup_taints(claim: dict[str, Any], node: dict[str, Any]) -> bool:
    startup = {(t.get("key"), t.get("effect")) for t in (claim.get("spec") or {}).get("startupTaints") or []}
    present = {(t.get("key"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []}
    return bool(startup & present)


def _do_not_disrupt(claim: dict[str, Any], node: dict[str, Any] | None) -> bool:
    for obj in (claim, node):
        if obj and (obj["metadata"].get("annotations") or {}).get(ANN_DO_NOT_DISRUPT) == "true":
            return True
    return False


# -- the lab's stand-in for kube-scheduler ---------------------------------------------------------------
def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def pod_fits(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    if (
        (node.get("spec") or {}).get("unschedulable")
        or not is_true(node, "Ready")
        or node["metadata"].get("deletionTimestamp")
    ):
        return False
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if required:
        fields = {"metadata.name": node["metadata"]["name"]}
        if not any(
            all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
            and all(_expression_matches(e, fields) for e in term.get("matchFields") or [])
            for term in required
        ):
            return False
    tolerations = spec.get("tolerations") or []
    return all(
        _tolerates(tolerations, t)
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )


class LabScheduler:
    """Binds Pending Pods of the default scheduler that name no node (pods/binding), fewest pods first."""

    def __init__(self, core: Any, log: Callable[[str], None] = print) -> None:
        self.core = core
        self.log = log

    def bind_pending(self, nodes: list[dict[str, Any]]) -> int:
        from kubernetes.client.rest import ApiException

        pods = (
            json.loads(
                self.core.list_pod_for_all_namespaces(
                    field_selector="status.phase=Pending", _preload_content=False
                ).data
            ).get("items")
            or []
        )
        pending = [
            p
            for p in pods
            if not (p.get("spec") or {}).get("nodeName")
            and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if not pending:
            return 0
        load: dict[str, int] = {}
        for p in (
            json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data).get("items") or []
        ):
            node_name = (p.get("spec") or {}).get("nodeName")
            if node_name:
                load[node_name] = load.get(node_name, 0) + 1
        bound = 0
        for pod in pending:
            fits = sorted(
                (n for n in nodes if pod_fits(pod, n)),
                key=lambda n: (load.get(n["metadata"]["name"], 0), n["metadata"]["name"]),
            )
            if not fits:
                continue
            target = fits[0]["metadata"]["name"]
            meta = pod["metadata"]
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target},
            }
            try:
                self.core.create_namespaced_pod_binding(
                    meta["name"], meta["namespace"], binding, _preload_content=False
                )
            except ApiException:
                continue
            load[target] = load.get(target, 0) + 1
            bound += 1
            stamp = now_rfc3339()
            with contextlib.suppress(Exception):
                self.core.create_namespaced_event(
                    meta["namespace"],
                    {
                        "metadata": {
                            "name": f"{meta['name']}.{time.time_ns():x}",
                            "namespace": meta["namespace"],
                        },
                        "involvedObject": {
                            "kind": "Pod",
                            "namespace": meta["namespace"],
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "apiVersion": "v1",
                        },
                        "reason": "Scheduled",
                        "type": "Normal",
                        "message": f"Successfully assigned {meta['namespace']}/{meta['name']} to {target}",
                        "source": {"component": "default-scheduler"},
                        "reportingComponent": "default-scheduler",
                        "firstTimestamp": stamp,
                        "lastTimestamp": stamp,
                        "count": 1,
                    },
                    _preload_content=False,
                )
        return bound


# -- health endpoint -------------------------------------------------------------------------------------
def health_server(sim: KarpenterSim, port: int, host: str = "127.0.0.1") -> Any:
    """/healthz (the loop runs and its last pass succeeded within a minute), /readyz (every lab NodePool has
    its
    nodes initialized, no disruption in flight) and /_lab/nodes (the lab nodes of this process, JSON)."""
    from runbook_lab.httpbase import LabHandler, LabHTTPServer

    class Handler(LabHandler):
        server_version = "karpenter-lab"

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.url_path == "/healthz":
                ok = sim.last_ok is not None and time.monotonic() - sim.last_ok < 60
                self.reply(
                    200 if ok else 503,
                    "ok" if ok else f"not healthy: {sim.last_error or 'no pass yet'}",
                    "text/plain",
                )
            elif self.url_path == "/readyz":
                ok = sim.ready()
                self.reply(200 if ok else 503, "ok" if ok else "nodes not ready", "text/plain")
            elif self.url_path == "/_lab/nodes":
                self.reply_json(
                    200,
                    {
                        "nodes": sim.node_report(),
                        "commands": [c.__dict__ for c in sim.commands],
                        "passes": sim.passes,
                        "last_error": sim.last_error,
                    },
                )
            else:
                self.reply(404, "404 page not found\n", "text/plain")

    return LabHTTPServer((host, port), Handler)


# -- CLI -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from kubernetes import config as kube_config

    from runbook_lab.httpbase import serve_in_thread
    from runbook_lib import params as params_mod

    parser = argparse.ArgumentParser(
        prog="python -m runbook_lab.karpenter",
        description="Karpenter simulation with lab nodes (see the module docstring)",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--nodes-dir", type=Path, required=True)
    parser.add_argument("--aws-endpoint", required=True, help="EC2 endpoint (the lab's moto server)")
    parser.add_argument(
        "--params", type=Path, required=True, help="lab parameters file (lab.node_pools, ports)"
    )
    parser.add_argument(
        "--health-port", type=int, default=None, help="serve /healthz, /readyz, /_lab/nodes here"
    )
    parser.add_argument(
        "--image-maximum-gc-age",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="kubelet imageMaximumGCAge of the lab nodes: remove images unused this long (0 = off)",
    )
    parser.add_argument(
        "--api-version",
        choices=sorted(FLAVORS),
        default=None,
        help="Karpenter API version (default: what the API server prefers)",
    )
    args = parser.parse_args(argv)
    try:
        params = params_mod.load(args.params)
        cluster = cluster_from_params(params, str(args.kubeconfig.resolve()), aws_endpoint=args.aws_endpoint)
        cluster.image_maximum_gc_age_s = args.image_maximum_gc_age
        api = kube_config.new_client_from_config(config_file=str(args.kubeconfig))
        ec2 = Ec2(args.aws_endpoint, params.aws.region)
        sim = KarpenterSim(
            api,
            ec2,
            cluster,
            args.nodes_dir.resolve(),
            version=args.api_version,
            log=lambda line: print(line, flush=True),
        )
    except Exception as exc:
        print(f"karpenter simulation: cannot start: {exc}", file=sys.stderr)
        return 2
    server = None
    if args.health_port is not None:
        try:
            server = health_server(sim, args.health_port)
        except OSError as exc:
            print(f"karpenter simulation: cannot listen on port {args.health_port}: {exc}", file=sys.stderr)
            return 2
        serve_in_thread(server)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    print(f"karpenter simulation running (API {sim.flavor.version}, pools {cluster.node_pools})", flush=True)
    stop.wait()
    print("karpenter simulation stopping its lab nodes", flush=True)
    sim.stop()
    if server is not None:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
