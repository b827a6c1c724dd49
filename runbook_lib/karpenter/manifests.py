"""Complete example manifests for a *new* node class with our userData, per Karpenter API version.

Shapes from Karpenter's getting-started guide and aws/karpenter-provider-aws examples/: the node class plus a
NodePool (Provisioner for v1alpha1) that references it. Written into the run folder for the operator to
review and `kubectl apply -f`; the stage itself never creates node classes (role, subnets and security
groups are the cluster owner's choice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runbook_lib.karpenter import schemas
from runbook_lib.params import RunbookParams

ALIASES = {"AL2": "al2", "AL2023": "al2023", "Bottlerocket": "bottlerocket"}


def _supports_budgets(params: RunbookParams) -> bool:
    """Disruption budgets exist from v0.34 (v0.32/v0.33 CRDs do not know the field)."""
    version = params.karpenter.version
    if not version:
        return True
    core = version.strip().lstrip("v").split(".")
    return (int(core[0]), int(core[1] if len(core) > 1 else 0)) >= (0, 34)


def node_class(params: RunbookParams, name: str, user_data: str) -> dict[str, Any]:
    k, cluster = params.karpenter, params.aws.cluster_name or "my-cluster"
    discovery = {"karpenter.sh/discovery": cluster}
    if k.api_version == "v1alpha1":
        return {
            "apiVersion": "karpenter.k8s.aws/v1alpha1",
            "kind": "AWSNodeTemplate",
            "metadata": {"name": name},
            "spec": {
                "amiFamily": k.ami_family,
                "instanceProfile": f"KarpenterNodeInstanceProfile-{cluster}",
                "subnetSelector": discovery,
                "securityGroupSelector": discovery,
                "userData": user_data,
            },
        }
    spec: dict[str, Any] = {
        "role": f"KarpenterNodeRole-{cluster}",
        "subnetSelectorTerms": [{"tags": discovery}],
        "securityGroupSelectorTerms": [{"tags": discovery}],
    }
    if k.api_version == "v1":
        # pin the alias in production (e.g. al2023@v20260714): @latest drifts every node on each AMI release
        spec["amiSelectorTerms"] = [{"alias": f"{ALIASES[k.ami_family]}@latest"}]
    else:
        spec["amiFamily"] = k.ami_family
    spec["userData"] = user_data
    return {
        "apiVersion": f"karpenter.k8s.aws/{k.api_version}",
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def node_pool(params: RunbookParams, name: str, node_class_name: str) -> dict[str, Any]:
    k = params.karpenter
    requirements = [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]
    if k.api_version == "v1alpha1":
        return {
            "apiVersion": "karpenter.sh/v1alpha5",
            "kind": "Provisioner",
            "metadata": {"name": name},
            "spec": {"providerRef": {"name": node_class_name}, "requirements": requirements},
        }
    if k.api_version == "v1":
        return {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "nodeClassRef": {
                            "group": "karpenter.k8s.aws",
                            "kind": "EC2NodeClass",
                            "name": node_class_name,
                        },
                        "requirements": requirements,
                    }
                },
                # consolidateAfter is required whenever disruption is written (v1 CRD). The budget lists
                # no reasons, so it paces every voluntary disruption: drift (our userData roll) and
                # consolidation alike. A budget limited to `reasons: [Drifted]` would leave Underutilized
                # and Empty with no budget at all, i.e. unconstrained ("Karpenter will take the minimum of
                # the budgets that have listed the reason or have left reasons undefined", Karpenter
                # docs concepts/disruption.md, "NodePool Disruption Budgets" > Reasons).
                "disruption": {
                    "consolidationPolicy": "WhenEmptyOrUnderutilized",
                    "consolidateAfter": "1m",
                    "budgets": [{"nodes": "10%"}],
                },
            },
        }
    pool: dict[str, Any] = {
        "apiVersion": "karpenter.sh/v1beta1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"nodeClassRef": {"name": node_class_name}, "requirements": requirements}}
        },
    }
    if _supports_budgets(params):
        pool["spec"]["disruption"] = {"budgets": [{"nodes": "10%"}]}
    return pool


def unbudgeted_reasons(pool: dict[str, Any], reasons: tuple[str, ...]) -> list[str]:
    """The disruption reasons no budget of a NodePool applies to (a budget without reasons applies to all)."""
    budgets = ((pool.get("spec") or {}).get("disruption") or {}).get("budgets")
    if budgets is None:
        return []  # no budgets written: Karpenter's default `nodes: 10%` applies to every reason
    covered = set()
    for budget in budgets:
        listed = budget.get("reasons")
        covered |= set(reasons) if not listed else set(listed)
    return [r for r in reasons if r not in covered]


def examples(params: RunbookParams, user_data: str, name: str = "mirrored") -> list[dict[str, Any]]:
    return [node_class(params, name, user_data), node_pool(params, name, name)]


def validate(docs: list[dict[str, Any]], params: RunbookParams) -> list[schemas.Problem]:
    crd_set = schemas.crd_set_for(params.karpenter.api_version, params.karpenter.version)
    return [p for doc in docs for p in schemas.validate(doc, crd_set)]


class _LiteralDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors for shared selector dicts
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None  # userData as a readable block scalar
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    header = (
        "# Example: a new node class with the containerd mirror userData, and a NodePool that uses it.\n"
        "# Generated by eks-mirror-runbook stage 4; review role/subnets/security groups, then kubectl apply "
        "-f.\n"
    )
    return header + yaml.dump_all(docs, Dumper=_LiteralDumper, sort_keys=False, width=120)


def write(run_dir: Path, params: RunbookParams, user_data: str) -> Path:
    path = Path(run_dir) / f"karpenter-example-{params.karpenter.api_version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(examples(params, user_data)), encoding="utf-8")
    return path
