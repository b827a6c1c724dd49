"""Facts about the three Sonatype Nexus Repository 3 charts that can expose the docker connectors.

Sources (tests/data/reference/nexus-helm/SOURCES.yaml): nxrm-ha 95.2.0 (maintained,
`sonatype/helm3-charts`), nexus-repository-manager and nxrm-aws-resiliency 64.2.0 (deprecated, last tag of
`sonatype/nxrm3-helm-repository`). Only data is kept here: chart metadata and the subset of each chart's
default values that the docker Service/Ingress templates read. Tests check the subsets against the charts'
own values.yaml files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    app_version: str
    deprecated: bool
    description: str
    home: str
    docker_keys: str  # where the docker exposure lives in the values (for tables and notes)
    several_ports: bool  # can one release expose several docker connector ports?
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """The `helm.sh/chart` label value (name-version, '+' replaced, at most 63 characters)."""
        return f"{self.name}-{self.version}".replace("+", "_")[:63].rstrip("-")

    def metadata(self) -> dict[str, Any]:
        """The chart metadata as Helm stores it in a release (Chart.yaml fields, JSON names)."""
        meta: dict[str, Any] = {
            "name": self.name,
            "home": self.home,
            "version": self.version,
            "description": self.description,
            "apiVersion": "v2",
            "appVersion": self.app_version,
            "type": "application",
        }
        if self.deprecated:
            meta["deprecated"] = True
        return meta


NXRM_HA = Chart(
    name="nxrm-ha",
    version="95.2.0",
    app_version="3.95.2",
    deprecated=False,
    description="Resilient Deployment of Sonatype Nexus Repository - Universal Binary repository",
    home="https://www.sonatype.com/products/sonatype-nexus-repository",
    docker_keys=(
        "nexus.docker.enabled + nexus.docker.registries[] {host, port, targetPort, secretName, annotations}"
    ),
    several_ports=True,
    defaults={
        "namespaces": {"nexusNs": {"enabled": True, "name": "nexusrepo"}},
        "ingress": {
            "name": "nexus-ingress",
            "enabled": False,
            "host": None,
            "hostPath": "/",
            "dockersubdomain": False,
            "defaultRule": False,
            "additionalRules": None,
            "ingressClassName": None,
            "annotations": None,
        },
        "service": {
            "annotations": {},
            "nexus": {
                "enabled": False,
                "type": "NodePort",
                "protocol": "TCP",
                "port": 80,
                "targetPort": 8081,
            },
            "headless": {"annotations": {}, "publishNotReadyAddresses": True},
        },
        "nexus": {
            "extraLabels": {},
            "extraSelectorLabels": {},
            "docker": {"enabled": False, "type": "NodePort", "protocol": "TCP"},
        },
    },
)

NEXUS_REPOSITORY_MANAGER = Chart(
    name="nexus-repository-manager",
    version="64.2.0",
    app_version="3.64.0",
    deprecated=True,
    description="DEPRECATED Sonatype Nexus Repository Manager - Universal Binary repository",
    home="https://www.sonatype.com/nexus-repository-oss",
    docker_keys="nexus.docker.enabled + nexus.docker.registries[] {host, port, secretName}; "
    "ingress.enabled, ingress.annotations (shared with the UI Ingress)",
    several_ports=True,
    defaults={
        "nexus": {"docker": {"enabled": False}, "nexusPort": 8081},
        "nameOverride": "",
        "fullnameOverride": "",
        "ingress": {
            "enabled": False,
            "ingressClassName": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
            "hostPath": "/",
            "hostRepo": "repo.demo",
        },
        "service": {"name": "nexus3", "enabled": True, "labels": {}, "annotations": {}, "type": "ClusterIP"},
    },
)

NXRM_AWS_RESILIENCY = Chart(
    name="nxrm-aws-resiliency",
    version="64.2.0",
    app_version="3.64.0",
    deprecated=True,
    description="DEPRECATED Resilient AWS Deployment of Sonatype Nexus Repository Manager - Universal Binary "
    "repository",
    home="https://www.sonatype.com/nexus-repository-oss",
    docker_keys="service.docker {enabled, type, port, targetPort} + ingress.dockerIngress {enabled, host, "
    "annotations}: one docker port per release",
    several_ports=False,
    defaults={
        "namespaces": {"nexusNs": "nexusrepo"},
        "ingress": {
            "annotations": {
                "kubernetes.io/ingress.class": "alb",
                "alb.ingress.kubernetes.io/healthcheck-path": "/service/rest/v1/status",
                "alb.ingress.kubernetes.io/scheme": "internal",
                "alb.ingress.kubernetes.io/subnets": "subnet-1,subnet-2",
            },
            "dockerIngress": {
                "enabled": False,
                "annotations": {
                    "kubernetes.io/ingress.class": "alb",
                    "alb.ingress.kubernetes.io/scheme": "internal",
                    "alb.ingress.kubernetes.io/subnets": "subnet-1,subnet-2",
                },
            },
        },
        "service": {
            "nexus": {"type": "NodePort", "protocol": "TCP", "port": 80, "targetPort": 8081},
            "docker": {
                "enabled": False,
                "type": "NodePort",
                "protocol": "TCP",
                "port": 9090,
                "targetPort": 8081,
            },
        },
    },
)

CHARTS: dict[str, Chart] = {c.name: c for c in (NXRM_HA, NEXUS_REPOSITORY_MANAGER, NXRM_AWS_RESILIENCY)}


def chart(flavour: str) -> Chart:
    try:
        return CHARTS[flavour]
    except KeyError:
        raise ValueError(f"unknown chart flavour {flavour!r}; known: {', '.join(CHARTS)}") from None


def key_table() -> list[dict[str, str]]:
    """Which values each chart uses for the docker exposure (for the notebook)."""
    return [
        {
            "chart": c.name,
            "version": c.version,
            "status": "deprecated" if c.deprecated else "maintained",
            "docker values": c.docker_keys,
            "several ports": "yes" if c.several_ports else "no (one per release)",
        }
        for c in CHARTS.values()
    ]
