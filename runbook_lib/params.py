"""Typed runbook parameters (pydantic v2).

One YAML file describes a target: the Nexus server, the upstream registries to mirror, how Nexus is
exposed, the Karpenter node classes and what verification must prove. Unknown keys are errors, secrets
are references (see ``secrets.py``), and relative paths are resolved against the parameters file's
folder so a file behaves the same whatever the caller's working directory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from runbook_lib import imageref, paramfile
from runbook_lib.secrets import SecretRef, parse_ref
from runbook_lib.versions import numeric_release

STAGES: tuple[str, ...] = ("preflight", "nexus-repos", "nexus-security", "helm", "karpenter", "verify")

# Nexus repository names (NamePatternConstants); docker names must be lowercase from 3.89.
_REPO_NAME = re.compile(r"^[a-z0-9\-][a-z0-9_\-\.]*$")


def _check_ref(value: str) -> str:
    parse_ref(value)  # raises ValueError with a readable reason
    return value


SecretRefStr = Annotated[str, AfterValidator(_check_ref)]


def _repo_name(value: str) -> str:
    if not _REPO_NAME.match(value):
        raise ValueError(
            "must be a lowercase Nexus repository name: letters, digits, '-', '_', '.', "
            "not starting with '_' or '.'"
        )
    return value


RepoName = Annotated[str, AfterValidator(_repo_name)]
# StrictInt: YAML `true` is a bool, and pydantic's lax mode would take it as 1
Port = Annotated[StrictInt, Field(ge=1, le=65535)]

# Kubernetes names (apimachinery validation: RFC 1123 label for namespaces, subdomain for most objects)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _k8s_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError("must be a Kubernetes namespace name (RFC 1123 label: a-z, 0-9, '-', at most 63)")
    return value


def _k8s_name(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            "must be a Kubernetes object name (RFC 1123 subdomain: a-z, 0-9, '-', '.', at most 253)"
        )
    return value


def _helm_release(value: str) -> str:
    # Helm: release names are DNS-1123 subdomains of at most 53 characters (object names get suffixes)
    if len(value) > 53 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError("must be a Helm release name: a-z, 0-9, '-', '.', at most 53 characters")
    return value


def _is_dns_host(value: str) -> bool:
    if not value.isascii() or len(value) > 253:
        return False
    labels = value.split(".")
    return all(_DNS_LABEL.match(label) for label in labels)


def _dns_host(value: str) -> str:
    if not value.isascii():
        raise ValueError("non-ASCII host name: write its IDNA form (xn--...)")
    if not _is_dns_host(value):
        raise ValueError(
            "must be a lowercase DNS host name (labels a-z, 0-9, '-', at most 63 each, 253 in all)"
        )
    return value


def _host_port(host: str) -> None:
    """A URL or registry host: an IP address or a DNS name; never echoes the value."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ValueError("host is not a valid IPv6 address") from None
        return
    if not host:
        raise ValueError("has no host")
    if not host.isascii():
        raise ValueError("non-ASCII host name: write its IDNA form (xn--...)")
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        raise ValueError("host is not a valid IPv4 address")
    if any(len(label) > 63 for label in host.split(".")):
        raise ValueError("host has a label longer than 63 characters")
    if not _is_dns_host(host.lower()):
        raise ValueError("host is not a DNS name (labels a-z, 0-9, '-', 253 characters in all)")


def _port_of(netloc: str) -> tuple[str, int | None]:
    host, port = netloc, None
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError("host has an unclosed '['")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("unexpected text after the IPv6 host")
            port = rest[1:]
    elif ":" in netloc:
        host, port = netloc.rsplit(":", 1)
    if port is None:
        return host, None
    if not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be a number from 1 to 65535")
    return host, int(port)


def check_url(value: str, *, path_ok: StrictBool = True) -> str:
    """An http(s) URL parsed in full: scheme, host grammar, port range, no userinfo, no query/fragment.

    Messages never quote the value: a URL with `user:password@` holds a secret."""
    if not isinstance(value, str) or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must be a URL without spaces or control characters")
    if not value.isascii():
        raise ValueError(
            "non-ASCII URL: write the host in its IDNA form (xn--...) and percent-encode the path"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry user:password@ (a secret in the file); use a secret reference field")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query or fragment")
    if not path_ok and parts.path not in ("", "/"):
        raise ValueError("must be scheme://host[:port] without a path")
    host, _port = _port_of(parts.netloc)
    _host_port(host)
    return value


def url_endpoint(value: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a checked URL, for comparing endpoints."""
    parts = urlsplit(value)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def _registry(value: str) -> str:
    host, _port = _port_of(value)
    if value != value.lower():
        raise ValueError("must be a lowercase registry host such as docker.io or registry.k8s.io")
    _host_port(host)
    return value


def _image(value: str) -> str:
    imageref.check(value)
    return value


K8sNamespace = Annotated[str, AfterValidator(_k8s_label)]
K8sName = Annotated[str, AfterValidator(_k8s_name)]
DnsHost = Annotated[str, AfterValidator(_dns_host)]
RegistryHost = Annotated[str, AfterValidator(_registry)]
ImageRef = Annotated[str, AfterValidator(_image)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


# --------------------------------------------------------------------------------------------- Nexus
class Nexus(Strict):
    url: str = Field(description="Base URL of Nexus (main port), e.g. https://nexus.example.com")
    admin_user: str = "admin"
    admin_password: SecretRefStr = Field(description="Secret reference to the admin password")
    initial_password_file: str | None = Field(
        None, description="Path of Nexus's generated admin.password (admin bootstrap); relative to this file"
    )
    initial_password_pod: str | None = Field(
        None, description="NAMESPACE/POD of Nexus, to read /nexus-data/admin.password by Kubernetes exec"
    )
    store_admin_password_in: str | None = Field(
        None, description="AWS Secrets Manager secret id to store the admin password in after bootstrap"
    )
    expect_edition: Literal["OSS", "COMMUNITY", "PRO"] | None = None
    min_version: str = "3.60.0"
    accept_eula: StrictBool = False
    blob_store: str = "default"
    timeout_s: float = Field(15.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return check_url(v).rstrip("/")


class Credentials(Strict):
    username: str
    password: SecretRefStr


class Upstream(Strict):
    """One upstream registry and the Nexus endpoint that mirrors it."""

    name: RepoName = Field(description="Name of the Nexus docker proxy repository, e.g. docker-hub")
    registry: str = Field(description="Registry host as images name it, e.g. docker.io, gcr.io")
    remote_url: str = Field(
        description="URL Nexus (and a direct pull) uses, e.g. https://registry-1.docker.io"
    )
    index_type: Literal["HUB", "REGISTRY", "CUSTOM"] | None = Field(
        None, description="Docker index; defaults to HUB for docker.io, REGISTRY otherwise"
    )
    index_url: str | None = None
    group: RepoName | None = Field(
        None, description="Docker group repository that serves this upstream (the seed's 'docker' group)"
    )
    connector_port: Port | None = Field(
        None, description="Nexus docker HTTP connector port of this upstream's endpoint (group if set)"
    )
    mirror_url: str | None = Field(
        None, description="URL nodes use for this endpoint (ingress host or load balancer); default from Helm"
    )
    credentials: Credentials | None = None
    content_max_age: StrictInt = Field(1440, ge=-1, description="minutes; -1 never expires")
    metadata_max_age: StrictInt = Field(1440, ge=-1, description="minutes; -1 never expires")
    negative_cache: StrictBool = True
    negative_cache_ttl: StrictInt = Field(1440, ge=0, description="minutes")

    @field_validator("registry")
    @classmethod
    def _registry_host(cls, v: str) -> str:
        return _registry(v)

    @field_validator("remote_url", "mirror_url", "index_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return check_url(v).rstrip("/") if v is not None else v

    @model_validator(mode="after")
    def _defaults(self) -> Upstream:
        if self.index_type is None:
            self.index_type = "HUB" if self.registry == "docker.io" else "REGISTRY"
        if self.index_type == "CUSTOM" and not self.index_url:
            raise ValueError("index_type CUSTOM needs index_url")
        return self

    @property
    def endpoint_repository(self) -> str:
        """The repository whose connector serves this upstream: the group if any, else the proxy."""
        return self.group or self.name


# ------------------------------------------------------------------------------------------ Security
class Security(Strict):
    mode: Literal["anonymous", "authenticated"] = "anonymous"
    privilege: RepoName = "docker-pull"
    role: str = "docker-pull"
    user: str = "docker-pull"
    pull_password: SecretRefStr | None = Field(
        None, description="Secret reference to the pull user's password"
    )
    rotate_password: StrictBool = Field(
        False, description="Send the pull user's password even if the user exists"
    )
    browse: StrictBool = Field(False, description="Also grant browse (tag listing) besides read")
    # Rotation without a bypass window (docs/rotation.md): a second pull user beside the first.
    rotation: Literal["start", "finish"] | None = Field(
        None,
        description="Credential rotation: start = add next_user beside user and roll the nodes onto it; "
        "finish = retire user once no node uses it (the phase in between is read from Nexus and the cluster)",
    )
    next_user: str | None = Field(None, min_length=1, description="Rotation: the pull user nodes move to")
    next_pull_password: SecretRefStr | None = Field(
        None, description="Rotation: secret reference to next_user's password"
    )
    anonymous_role: str = Field(
        "eks-mirror-anonymous",
        min_length=1,
        description="Anonymous mode: our role on the anonymous user, read and browse on the mirror "
        "endpoint repositories only (the built-in nx-anonymous reads every repository)",
    )
    anonymous_access: Literal["keep", "off"] | None = Field(
        None,
        description="Authenticated mode on a Nexus whose other repositories are read anonymously today: "
        "keep (anonymous access stays on; the mirrors must not be in the anonymous read set) or off "
        "(switch anonymous access off for every consumer). Unset refuses to choose for them",
    )

    @field_validator("anonymous_access", mode="before")
    @classmethod
    def _bare_off(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare `off` as false
            raise ValueError('write "off" in quotes: YAML reads a bare off as false')
        return value

    @model_validator(mode="after")
    def _auth_needs_password(self) -> Security:
        if self.mode == "authenticated" and not self.pull_password:
            raise ValueError("mode 'authenticated' needs pull_password (a secret reference)")
        if self.mode == "anonymous" and self.anonymous_access is not None:
            raise ValueError("anonymous_access applies to mode 'authenticated' (anonymous mode keeps it on)")
        if self.anonymous_role in ("nx-anonymous", "nx-admin", self.role):
            raise ValueError(
                f"anonymous_role {self.anonymous_role!r} must be a role of its own (not a built-in role, "
                "not security.role)"
            )
        return self


# statefulset.replicaCount in nxrm-ha's values.yaml (a Pro HA cluster); the other two charts run one pod
CHART_DEFAULT_REPLICAS = {"nxrm-ha": 3, "nxrm-aws-resiliency": 1, "nexus-repository-manager": 1}


# ---------------------------------------------------------------------------------------------- Helm
# IngressGroup names (aws-load-balancer-controller docs/guide/ingress/annotations.md, group.name)
_ALB_GROUP = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def _alb_group(value: str) -> str:
    if not _ALB_GROUP.match(value):
        raise ValueError(
            "must be an ALB IngressGroup name: a-z, 0-9, '-', '.', starting and ending with a letter "
            "or digit, at most 63 characters"
        )
    return value


class HelmAlb(Strict):
    """AWS Load Balancer Controller settings for the docker Ingresses (helm.ingress_controller alb)."""

    group_name: Annotated[str, AfterValidator(_alb_group)] | None = Field(
        None,
        description="alb.ingress.kubernetes.io/group.name shared by every docker Ingress (one ALB); "
        "default <namespace>-<release>-docker",
    )
    scheme: Literal["internal", "internet-facing"] = Field(
        "internal", description="alb.ingress.kubernetes.io/scheme (nodes usually reach the mirror in the VPC)"
    )
    target_type: Literal["ip", "instance"] = Field(
        "ip",
        description="ip: pod IPs, any Service type (VPC CNI); instance: node ports, needs NodePort Services",
    )


class Helm(Strict):
    """How the Nexus Helm chart exposes the docker endpoints (stage 3)."""

    flavour: Literal["nxrm-ha", "nxrm-aws-resiliency", "nexus-repository-manager"] = Field(
        "nxrm-ha", description="Chart the release was installed from; nxrm-ha is the maintained one"
    )
    release: Annotated[str, AfterValidator(_helm_release)] = "nxrm"
    namespace: K8sNamespace = "nexusrepo"
    chart: str = Field(
        "sonatype/nxrm-ha", description="Chart reference for `helm upgrade` (repo/name or path)"
    )
    chart_version: str | None = Field(
        None,
        description="`helm upgrade --version`; default: the deployed release's chart version "
        "(values change only)",
    )
    apply_with: Literal["auto", "helm", "manifests"] = Field(
        "auto",
        description="auto: the helm CLI when installed, else manifests (Service/Ingress applied directly)",
    )
    ingress_class: K8sName | None = "nginx"
    host_suffix: DnsHost | None = Field(
        None, description="Ingress hosts are <registry-label>.<host_suffix> unless set"
    )
    hosts: dict[RegistryHost, DnsHost] = Field(
        default_factory=dict, description="registry host -> ingress host"
    )
    tls_secret: K8sName | None = Field(
        None, description="TLS Secret of the docker Ingresses (e.g. a wildcard certificate)"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Docker Ingress annotations, added to (and overriding) the class defaults",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] | None = Field(
        None,
        description="Docker Service type; default ClusterIP, NodePort for ALB instance targets "
        "(nxrm-aws-resiliency: its chart's NodePort)",
    )
    ready_timeout_s: float = Field(
        60.0, gt=0, description="How long verification waits for the ingress controller to route a new host"
    )
    replicas: StrictInt | None = Field(
        None,
        ge=1,
        description="Nexus pods the release runs (nxrm-ha: statefulset.replicaCount); default: the chart's "
        "own (nxrm-ha 3, the others 1). Community Edition supports one",
    )

    @property
    def effective_replicas(self) -> int:
        return self.replicas if self.replicas is not None else CHART_DEFAULT_REPLICAS[self.flavour]

    ingress_controller: Literal["auto", "nginx", "alb", "other"] = Field(
        "auto",
        description="Controller behind ingress_class, for its annotations: auto = from the class name "
        "(nginx: ingress-nginx, alb: AWS Load Balancer Controller, else none)",
    )
    alb: HelmAlb = Field(default_factory=HelmAlb)

    @property
    def controller(self) -> Literal["nginx", "alb", "other"]:
        if self.ingress_controller != "auto":
            return self.ingress_controller
        cls = (self.ingress_class or "").lower()
        return "nginx" if cls == "nginx" else "alb" if cls == "alb" else "other"

    @model_validator(mode="after")
    def _alb_targets(self) -> Helm:
        if (
            self.controller == "alb"
            and self.alb.target_type == "instance"
            and self.service_type == "ClusterIP"
        ):
            raise ValueError(
                "service_type ClusterIP has no node port for ALB instance targets (alb.target_type): "
                "set service_type NodePort or alb.target_type ip"
            )
        return self


# ----------------------------------------------------------------------------------------- Karpenter
class Karpenter(Strict):
    api_version: Literal["v1", "v1beta1", "v1alpha1"] = Field(
        "v1",
        description="Node class API: v1 EC2NodeClass (Karpenter >= 1.0), v1beta1 EC2NodeClass (v0.32-v0.37), "
        "v1alpha1 AWSNodeTemplate (<= v0.31)",
    )
    version: str | None = Field(
        None,
        description="Karpenter release in the cluster, e.g. 1.14.1; drift, budgets and AL2023 depend on it",
    )
    namespace: K8sNamespace = Field(
        "karpenter", description="Karpenter's namespace (v0.31: karpenter-global-settings)"
    )
    node_classes: list[K8sName] = Field(default_factory=lambda: ["default"], min_length=1)
    node_pools: list[K8sName] = Field(default_factory=lambda: ["default"])
    ami_family: Literal["AL2", "AL2023", "Bottlerocket"] = "AL2023"
    bottlerocket_version: str | None = Field(
        None, description="Bottlerocket release of the nodes, e.g. 1.20.0 (chooses the mirror settings form)"
    )
    credential_mode: Literal["anonymous", "static-header", "secrets-manager"] = "anonymous"
    credentials_secret_id: str | None = Field(None, description="Secrets Manager id nodes read at boot")
    next_credentials_secret_id: str | None = Field(
        None,
        description="Rotation in secrets-manager mode: the secret holding security.next_user's credential; "
        "a new id changes userData, so Karpenter rolls the nodes onto it",
    )
    containerd_version: str | None = Field(
        None,
        description="Node containerd version, e.g. 1.7.27, for the preflight's config checks (whether "
        "hosts.toml gets dial_timeout is decided on each node at boot from `containerd --version`)",
    )
    node_containerd_config: str | None = Field(
        None,
        description="A node's containerd config.toml (e.g. from `containerd config dump`) for the preflight; "
        "relative to this file",
    )
    mirror_ca_file: str | None = Field(
        None,
        description="PEM CA bundle nodes trust for the mirror endpoints (private CA); relative to this file",
    )
    mirror_skip_verify: StrictBool = Field(
        False, description="Nodes skip TLS verification of the mirror (testing only)"
    )
    dial_timeout: str = Field(
        "5s",
        pattern=r"^[0-9]+(ms|s|m)$",
        description="hosts.toml dial_timeout: how long containerd waits for a connection to a mirror; the "
        "boot script writes it where the node's containerd reads it (>= 2.0.7, from `containerd --version`)",
    )
    probe_mirror_at_boot: StrictBool = Field(
        True,
        description="Log at boot which mirrors answer /v2/ (log only: every hosts.toml is written anyway)",
    )
    probe_timeout_s: StrictInt = Field(
        3, ge=1, le=30, description="Boot probe timeout (curl --max-time); the mirrors are probed in parallel"
    )
    force_roll: bool | str = Field(
        False,
        description="Roll nodes by a NodePool template annotation: true = once per userData content, "
        "a string = once per distinct string",
    )
    rollout_timeout_s: StrictInt = Field(1800, gt=0)
    rollout_poll_s: float = Field(10.0, gt=0, description="Seconds between two looks at NodeClaims and Nodes")

    @model_validator(mode="after")
    def _secret_mode(self) -> Karpenter:
        if self.credential_mode == "secrets-manager":
            if not self.credentials_secret_id:
                raise ValueError("credential_mode secrets-manager needs credentials_secret_id")
            if self.ami_family == "Bottlerocket":
                raise ValueError(
                    "credential_mode secrets-manager is for AL2/AL2023 (Bottlerocket has no boot script)"
                )
        return self

    @model_validator(mode="after")
    def _versions(self) -> Karpenter:
        for name in ("version", "bottlerocket_version", "containerd_version"):
            value = getattr(self, name)
            if value is not None and not re.match(r"^v?[0-9]+(\.[0-9]+){0,2}([-~+].*)?$", value):
                raise ValueError(f"{name} must be a version such as 1.14.1, not {value!r}")
        if self.version:
            release = numeric_release(self.version)
            expected = "v1alpha1" if release < (0, 32) else "v1beta1" if release < (1, 0) else "v1"
            if expected != self.api_version:
                raise ValueError(
                    f"Karpenter {self.version} serves node classes as {expected}, "
                    f"but api_version is {self.api_version}"
                )
            if self.ami_family == "AL2023" and release < (0, 35):
                raise ValueError("amiFamily AL2023 needs Karpenter >= v0.35.0")
        if self.ami_family == "AL2023" and self.api_version == "v1alpha1":
            raise ValueError(
                "amiFamily AL2023 needs Karpenter >= v0.35.0 (EC2NodeClass), not AWSNodeTemplate"
            )
        if self.ami_family == "Bottlerocket" and self.bottlerocket_version:
            release = numeric_release(self.bottlerocket_version)
            if release < (1, 2):
                raise ValueError("Bottlerocket has container-registry mirrors only from v1.2.0")
            if self.credential_mode == "static-header" and release < (1, 6, 2):
                raise ValueError("Bottlerocket has container-registry credentials only from v1.6.2")
        return self


# ------------------------------------------------------------------------------------ Kubernetes, AWS
class Kubernetes(Strict):
    kubeconfig: str | None = Field(None, description="Path to a kubeconfig; relative to this file")
    context: str | None = None
    in_cluster: StrictBool = False
    api_host: str | None = Field(None, description="Override of the API server URL (stand-ins, tunnels)")

    @field_validator("api_host")
    @classmethod
    def _api_host(cls, v: str | None) -> str | None:
        return check_url(v) if v is not None else v

    required: StrictBool = True

    @model_validator(mode="after")
    def _one_source(self) -> Kubernetes:
        if self.in_cluster and self.kubeconfig:
            raise ValueError("set either in_cluster or kubeconfig, not both")
        return self


class Aws(Strict):
    region: str = "us-east-1"
    endpoint_url: str | None = Field(None, description="AWS endpoint override (moto in the lab)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return check_url(v) if v is not None else v

    profile: str | None = Field(None, description="AWS profile name; default: the standard credential chain")
    stand_in_credentials: StrictBool = Field(
        False, description="Use fixed dummy credentials: only for stand-ins such as the lab's moto server"
    )
    cluster_name: str | None = None
    required: StrictBool = True


# ------------------------------------------------------------------------------------- Verification
class Thresholds(Strict):
    """Checks for scheduled runs: a breach fails the verify stage (runner exit code 1)."""

    min_warm_speedup: float | None = Field(
        None,
        gt=0,
        description="minimum warm-mirror speed-up over direct pulls, over the whole image set "
        "(sum of direct medians / sum of warm medians); node path when measured, else runbook host",
    )
    max_warm_pull_s: float | None = Field(
        None, gt=0, description="maximum median warm-mirror pull time of any image"
    )
    min_ratelimit_remaining: StrictInt | None = Field(
        None,
        ge=0,
        description="minimum Docker Hub pulls left in the window (anonymous, from the runbook host)",
    )
    allow_bypass: StrictBool = Field(
        False, description="tolerate node pulls of mirrored names that bypassed the mirror"
    )


class Verification(Strict):
    images: list[ImageRef] = Field(default_factory=list)
    repetitions: StrictInt = Field(3, ge=1, le=50)
    platform: str = "linux/amd64"
    node_pull: StrictBool = True
    thresholds: Thresholds = Field(default_factory=Thresholds)
    max_parallel_layers: StrictInt = Field(4, ge=1, le=32, description="concurrent blob downloads per pull")
    concurrency: StrictInt = Field(
        4,
        ge=1,
        le=32,
        description="pulls from the runbook host at once, across images and routes (1 = one at a time)",
    )
    pull_timeout_s: float = Field(600.0, gt=0, description="per pull (runbook host) and per pod (nodes)")
    namespace: K8sNamespace = Field("default", description="namespace of the short-lived node pull pods")
    bypass_aliases: dict[RegistryHost, RegistryHost] = Field(
        default_factory=lambda: {"docker.io": "registry-1.docker.io"},
        description="registry -> another name of the same registry that nodes have no mirror for: the node "
        "path pulls it to measure the direct route",
    )
    counters_url: str | None = Field(
        None,
        description="optional per-repository request counters (JSON {repo: {requests: N}}); the lab's "
        "Nexus emulator serves them at /_lab/counters. Real Nexus has no such endpoint",
    )
    nexus_metrics: StrictBool = Field(
        True, description="read request/component totals from Nexus's /service/metrics/data (nx-metrics-all)"
    )
    ratelimit_reserve: StrictInt = Field(
        10,
        ge=0,
        description="skip direct Docker Hub pulls that would leave fewer pulls than this in the window",
    )
    demonstrate_rate_limit: StrictBool = Field(
        False,
        description="exhaust the Docker Hub budget with direct manifest GETs, then pull through the "
        "warm mirror. Burns real quota: never on in production",
    )
    demo_source_address: str | None = Field(
        None,
        description="local address the demonstration connects from (Docker Hub charges per source IP; "
        "the lab uses 127.0.0.2 so the runbook host's own budget stays intact)",
    )
    ce_requests_per_day: StrictInt = Field(100_000, gt=0, description="Community Edition request cap (3.87+)")
    ce_components: StrictInt = Field(40_000, gt=0, description="Community Edition component cap (3.87+)")
    expected_pulls_per_day: StrictInt | None = Field(
        None, ge=0, description="node image pulls per day, for the Community Edition requests forecast"
    )

    @field_validator("counters_url")
    @classmethod
    def _counters_url(cls, v: str | None) -> str | None:
        return check_url(v) if v is not None else v

    @field_validator("demo_source_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an IP address") from None
        return v


class Outputs(Strict):
    dir: str = Field(
        "../outputs",
        description="Where run folders go; relative to this file, or s3://BUCKET[/PREFIX] (written through "
        "boto3's own configuration, the run folder staged locally and redacted before upload)",
    )
    history: str | None = Field(
        None,
        description="History store for trends (a local path); default <dir>/history.sqlite, in S3 too",
    )

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if "://" in v and not v.startswith("file://"):
            from runbook_lib.audit.destinations import parse_s3_url  # lazy: audit imports this module

            if not v.startswith("s3://"):
                raise ValueError("a remote output is s3://BUCKET[/PREFIX]; other schemes are not supported")
            parse_s3_url(v)  # ValueError: says what is wrong without repeating the value
        return v

    @field_validator("history")
    @classmethod
    def _history(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            raise ValueError("must be a local path; with an s3:// dir the history lives there by default")
        return v


# ---------------------------------------------------------------------------------------------- Lab
class LabRegistry(Strict):
    port: Port


class LabDockerHub(Strict):
    port: Port = Field(description="Docker Hub-like front of the docker.io stand-in (registry API)")
    token_port: Port = Field(description="auth.docker.io-like token service")
    limit: StrictInt = Field(100, ge=1, description="manifest GETs per window")
    window_s: StrictInt = Field(21600, ge=1)
    throttle_bytes_per_s: StrictInt | None = Field(None, ge=1024)
    latency_ms: StrictInt = Field(0, ge=0)


class LabNexus(Strict):
    version: str = "3.94.0-01"
    edition: Literal["OSS", "COMMUNITY", "PRO"] = "COMMUNITY"


class Lab(Strict):
    """The built-in lab (only in lab parameter files)."""

    ingress_port: Port = Field(
        18080, description="host-routing proxy that serves the lab cluster's Ingresses"
    )
    karpenter_health_port: Port = Field(
        18090, description="health/readiness of the lab's Karpenter simulation"
    )
    image_gc_age_s: float = Field(
        2.0,
        ge=0,
        description="lab nodes free unused images after this many seconds "
        "(kubelet imageMaximumGCAge; 0 = never)",
    )
    node_pools: dict[K8sName, Annotated[StrictInt, Field(ge=0)]] = Field(
        default_factory=lambda: {"default": 2}, description="NodePool name -> initial number of lab nodes"
    )

    dir: str = Field("../.lab", description="State, logs and data of the lab; relative to this file")
    registries: dict[RegistryHost, LabRegistry] = Field(
        description="registry host (docker.io, ...) -> stand-in"
    )
    dockerhub: LabDockerHub
    nexus: LabNexus = Field(default_factory=LabNexus)
    kube_port: Port
    moto_port: Port
    image_mb: StrictInt = Field(50, ge=1, le=2048, description="size of the single-layer big image")
    multilayer_mb: StrictInt = Field(40, ge=4, le=4096, description="total size of the 4-layer image")


# --------------------------------------------------------------------------------------------- Root
class RunbookParams(Strict):
    target: str = Field(description="Name of the environment, used in run folder names")
    nexus: Nexus
    upstreams: list[Upstream] = Field(min_length=1)
    security: Security = Field(default_factory=Security)
    helm: Helm = Field(default_factory=Helm)
    karpenter: Karpenter = Field(default_factory=Karpenter)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    aws: Aws = Field(default_factory=Aws)
    verification: Verification = Field(default_factory=Verification)
    outputs: Outputs = Field(default_factory=Outputs)
    resolve: dict[str, str] = Field(
        default_factory=dict,
        description="host name -> IP address overrides for the runbook's own HTTP clients "
        "(like curl --resolve)",
    )
    lab: Lab | None = None

    # Set by load(): where relative paths are anchored. Not part of the file.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$", v):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-' (it names run folders)")
        return v

    @field_validator("resolve")
    @classmethod
    def _addresses(cls, v: dict[str, str]) -> dict[str, str]:
        for host, address in v.items():
            if not _is_dns_host(host.lower()):
                raise ValueError(f"{host!r} is not a DNS host name")
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{host}: {address!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _endpoints_distinct(self) -> RunbookParams:
        """Every pair of upstreams: distinct name, mirror_url, ingress host; no port Nexus itself uses."""
        from runbook_lib.helm.values import registry_label  # lazy: helm imports this module

        names: dict[str, int] = {}
        mirrors: dict[tuple[str, str, int, str], int] = {}
        hosts: dict[str, int] = {}
        nexus_port = url_endpoint(self.nexus.url)[2]
        reserved = {nexus_port: "the Nexus URL's port"}
        if self.lab:
            reserved[self.lab.ingress_port] = "lab.ingress_port"
        for i, up in enumerate(self.upstreams):
            if up.name in names:
                raise ValueError(f"upstreams[{i}].name: the same name as upstreams[{names[up.name]}]")
            names[up.name] = i
            if up.connector_port in reserved:
                raise ValueError(f"upstreams[{i}].connector_port: already {reserved[up.connector_port]}")
            if up.mirror_url:
                key = url_endpoint(up.mirror_url)
                if key in mirrors:
                    raise ValueError(
                        f"upstreams[{i}].mirror_url: the same endpoint as upstreams[{mirrors[key]}]"
                    )
                mirrors[key] = i
            host = self.helm.hosts.get(up.registry) or (
                f"{registry_label(up.registry)}.{self.helm.host_suffix}" if self.helm.host_suffix else None
            )
            if host:
                if host in hosts:
                    raise ValueError(
                        f"upstreams[{i}].registry: its ingress host is upstreams[{hosts[host]}]'s too"
                    )
                hosts[host] = i
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> RunbookParams:
        seen: dict[str, str] = {}
        ports: dict[int, str] = {}
        for i, up in enumerate(self.upstreams):
            if up.registry in seen:
                raise ValueError(
                    f"upstreams[{i}].registry: {up.registry} is already mirrored by {seen[up.registry]}"
                )
            seen[up.registry] = up.name
            if up.connector_port is not None:
                owner = ports.get(up.connector_port)
                if owner and owner != up.endpoint_repository:
                    raise ValueError(
                        f"upstreams[{i}].connector_port: {up.connector_port} is already used by {owner}; "
                        "Nexus ignores containerd's ?ns=, so each upstream needs its own endpoint"
                    )
                ports[up.connector_port] = up.endpoint_repository
        groups: dict[str, str] = {}
        for i, up in enumerate(self.upstreams):
            if up.group:
                if up.group in groups and groups[up.group] != up.registry:
                    raise ValueError(
                        f"upstreams[{i}].group: group {up.group} would serve both {groups[up.group]} "
                        f"and {up.registry}: Nexus ignores containerd's ?ns=, so one group for several "
                        "upstreams serves paths from the wrong member"
                    )
                groups[up.group] = up.registry
        for i, up in enumerate(self.upstreams):
            if up.name in groups:
                raise ValueError(f"upstreams[{i}].name: {up.name} is used both as proxy and group")
        return self

    @model_validator(mode="after")
    def _rotation(self) -> RunbookParams:
        """A credential rotation (docs/rotation.md): a second pull user, named in full."""
        sec = self.security
        if sec.rotation is not None:
            if sec.mode != "authenticated":
                raise ValueError("security.rotation: a pull credential rotation needs mode 'authenticated'")
            if not sec.next_user or not sec.next_pull_password:
                raise ValueError(
                    "security.rotation: needs next_user and next_pull_password (the credential nodes move to)"
                )
            if sec.next_user in (sec.user, self.nexus.admin_user):
                raise ValueError(
                    "security.next_user: must be a user of its own, not user or the admin (Nexus keeps one "
                    "password per user)"
                )
            if sec.rotate_password:
                raise ValueError(
                    "security.rotate_password: changes user's password in place, the bypass window a "
                    "rotation avoids; leave it off during security.rotation"
                )
        elif sec.next_user or sec.next_pull_password:
            raise ValueError(
                "security.next_user: only during a rotation: add rotation: start to begin one or, after "
                "rotation: finish, move next_user/next_pull_password to user/pull_password"
            )
        k, rotating = self.karpenter, sec.rotation is not None
        if k.credential_mode == "secrets-manager" and rotating:
            if not k.next_credentials_secret_id or k.next_credentials_secret_id == k.credentials_secret_id:
                raise ValueError(
                    "karpenter.next_credentials_secret_id: a rotation in secrets-manager mode needs a secret "
                    "of its own for next_user (the same id would change no userData: no node would roll)"
                )
        elif k.next_credentials_secret_id and not (rotating and k.credential_mode == "secrets-manager"):
            raise ValueError(
                "karpenter.next_credentials_secret_id: only for a rotation (security.rotation) in "
                "secrets-manager mode; after it, move it to credentials_secret_id"
            )
        return self

    @model_validator(mode="after")
    def _edition_fits_the_chart(self) -> RunbookParams:
        """Community Edition runs one node: "CE doesn't support multi-node clusters of Repository"
        (sonatype/nexus-public#581, Sonatype's reply); OSS never had clustering either. nxrm-ha defaults
        to three replicas (its values.yaml statefulset.replicaCount), so CE on it must say replicas: 1."""
        edition = self.nexus.expect_edition
        replicas = self.helm.effective_replicas
        if edition in ("COMMUNITY", "OSS") and replicas > 1:
            given = "" if self.helm.replicas is not None else f" ({self.helm.flavour}'s default)"
            raise ValueError(
                f"helm.replicas: {replicas}{given} Nexus nodes, but {edition} supports no multi-node "
                "cluster (sonatype/nexus-public#581): set helm.replicas: 1 (statefulset.replicaCount: 1, "
                "clustered: false), or expect_edition: PRO with a Pro licence"
            )
        return self

    # -- helpers -------------------------------------------------------------------------------
    def path(self, value: str | None) -> Path | None:
        """Resolve a path from the file against the file's folder."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def upstream(self, registry: str) -> Upstream:
        for up in self.upstreams:
            if up.registry == registry:
                return up
        raise KeyError(f"no upstream for registry {registry}")

    def secret_refs(self) -> list[tuple[str, SecretRef]]:
        """Every secret reference in the file, with its field path."""
        out: list[tuple[str, SecretRef]] = [("nexus.admin_password", parse_ref(self.nexus.admin_password))]
        for i, up in enumerate(self.upstreams):
            if up.credentials:
                out.append((f"upstreams[{i}].credentials.password", parse_ref(up.credentials.password)))
        if self.security.pull_password:
            out.append(("security.pull_password", parse_ref(self.security.pull_password)))
        if self.security.next_pull_password:
            out.append(("security.next_pull_password", parse_ref(self.security.next_pull_password)))
        return out


class ParamsError(Exception):
    """Invalid parameters: one entry per problem, each with a field path and a reason."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(f"{p}: {m}" for p, m in problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {msg}" for path, msg in self.problems]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


# cross-field checks raise at the top level; their message starts with the field path they blame
_BLAME = re.compile(
    r"^((?:upstreams|helm|lab|nexus|karpenter|security)(?:\[\d+\])?(?:\.[a-z_]+)*): (.*)$", re.S
)


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a runbook parameter)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = _loc(tuple(x for x in e["loc"] if not str(x).startswith("function-")))
        blamed = _BLAME.match(msg) if loc == "(top level)" else None
        if blamed:
            loc, msg = blamed.group(1), blamed.group(2)
        problems.append((loc, msg))
    return problems


def parse(data: Any, source: str = "<parameters>", base_dir: Path | None = None) -> RunbookParams:
    if not isinstance(data, dict):
        raise ParamsError(source, [("(top level)", "must be a mapping of parameter sections")])
    try:
        params = RunbookParams.model_validate(data)
    except ValidationError as err:
        raise ParamsError(source, _problems(err)) from None
    params.base_dir = (base_dir or Path(".")).resolve()
    return params


def load(path: str | Path) -> RunbookParams:
    """Read and validate a parameters file. Makes no network request. Any bad input is a ParamsError."""
    path = Path(path)
    try:
        data = paramfile.read(path)
    except paramfile.FileProblem as err:
        raise ParamsError(str(path), [(err.where, err.reason)]) from None
    try:
        return parse(data, str(path), path.parent)
    except ParamsError:
        raise
    except Exception as err:  # a validator tripped on an input shape nobody foresaw: still bad input
        raise ParamsError(str(path), [("(file)", f"cannot be validated ({type(err).__name__})")]) from None


# The fewest Nexus requests one node pull costs: GET /v2/ (401), the token, the manifest, the config blob
# and one layer; failed requests count towards the cap too (sonatype/nexus-public#736). Real images cost
# more (a multi-arch index, more layers): the lab measures 5.5 per pull for its small images.
MIN_REQUESTS_PER_PULL = 5


def advisories(params: RunbookParams) -> list[tuple[str, str]]:
    """Warnings that do not make a file invalid (field path, reason): what `runbook params check` prints
    after "ok". The forecast from measured requests per pull is the verify stage's (verify/report.py)."""
    out = []
    v, edition = params.verification, params.nexus.expect_edition
    if v.expected_pulls_per_day and edition not in ("PRO", "OSS"):
        floor = v.expected_pulls_per_day * MIN_REQUESTS_PER_PULL
        if floor >= v.ce_requests_per_day:
            out.append(
                (
                    "verification.expected_pulls_per_day",
                    f"{v.expected_pulls_per_day:,} pulls/day at {MIN_REQUESTS_PER_PULL} or more requests per "
                    f"pull is at least {floor:,} requests/day: at or over the Community Edition cap of "
                    f"{v.ce_requests_per_day:,} (help.sonatype.com/en/usage-center.html); plan Pro "
                    "(nexus.expect_edition: PRO) or fewer pulls",
                )
            )
    return out


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def summary(params: RunbookParams) -> str:
    ups = ", ".join(f"{u.registry}→{u.endpoint_repository}" for u in params.upstreams)
    return (
        f"target {params.target}: Nexus {params.nexus.url}, {len(params.upstreams)} upstream(s) ({ups}), "
        f"security {params.security.mode}, "
        f"Karpenter {params.karpenter.api_version}/{params.karpenter.ami_family}"
        + (", lab" if params.lab else "")
    )


def json_schema() -> dict[str, Any]:
    return RunbookParams.model_json_schema()
