"""What every node should be told: per upstream registry, its upstream server and its mirror endpoint.

One hosts.toml per registry namespace (``/etc/containerd/certs.d/<registry>/hosts.toml``): ``server`` is the
upstream (tried last), the only ``[host]`` is that upstream's own Nexus endpoint — never one endpoint for
several registries, because Nexus ignores containerd's ``?ns=`` (stage 1). Rendering is done by
``runbook_lib.containerd.hosts`` from a dict, so a file can never carry a duplicated table.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from runbook_lib.containerd.hosts import ContainerdVersion, HostsToml, MirrorHost
from runbook_lib.params import RunbookParams, Upstream

# The CA bundle is written once per node and referenced relative to each hosts.toml: containerd joins a
# relative `ca` path with the hosts.toml's folder (remotes/docker/config/hosts.go `makeAbsPath`, 1.6-2.x),
# so the same file works under a sandbox root (EKS_MIRROR_ROOT) and on a real node.
CA_NODE_PATH = "etc/containerd/eks-mirror/ca.crt"  # below the node's root
CA_FROM_HOSTS_TOML = "../../eks-mirror/ca.crt"  # certs.d/<registry>/ -> etc/containerd/eks-mirror/


class MirrorConfigError(ValueError):
    """The parameters do not say where nodes should pull from."""


@dataclass(frozen=True)
class NodeMirror:
    registry: str  # the namespace folder under certs.d, e.g. docker.io
    server: str  # the upstream, e.g. https://registry-1.docker.io
    mirror_url: str  # the upstream's own Nexus endpoint, as nodes reach it

    @property
    def host(self) -> str:
        """host[:port] of the mirror: what containerd and Bottlerocket key credentials by."""
        return urlsplit(self.mirror_url).netloc

    @property
    def probe_url(self) -> str:
        """The registry API base of the mirror (`/v2/`); path-style endpoints keep their prefix."""
        url, _ = MirrorHost(self.mirror_url).normalized()
        return url + "/" if url.endswith("/v2") else url + "/v2/"


def mirror_url(params: RunbookParams, up: Upstream) -> str:
    if up.mirror_url:
        return up.mirror_url
    host = params.helm.hosts.get(up.registry)
    if host:
        return f"https://{host}"
    raise MirrorConfigError(
        f"upstream {up.registry}: no mirror_url and no helm.hosts entry — nodes need the URL of this "
        "upstream's endpoint (its ingress host or load balancer)"
    )


def node_mirrors(params: RunbookParams) -> list[NodeMirror]:
    """Sorted by registry so the generated userData is byte-stable whatever the order in the file."""
    return sorted(
        (NodeMirror(up.registry, up.remote_url, mirror_url(params, up)) for up in params.upstreams),
        key=lambda m: m.registry,
    )


def containerd_version(params: RunbookParams) -> ContainerdVersion | None:
    """karpenter.containerd_version, for the preflight's checks; what the files say is decided on the node."""
    text = params.karpenter.containerd_version
    return ContainerdVersion.parse(text) if text else None


def hosts_files(params: RunbookParams, authorization: str | None) -> list[HostsToml]:
    """The hosts.toml of every mirrored registry. `authorization` is the Authorization header value (or
    the boot-time placeholder of the Secrets Manager mode); None sends no header."""
    k = params.karpenter
    files = []
    for m in node_mirrors(params):
        host = MirrorHost(
            m.mirror_url,
            ca=[CA_FROM_HOSTS_TOML] if k.mirror_ca_file else [],
            skip_verify=k.mirror_skip_verify,
            dial_timeout=k.dial_timeout,  # the boot script drops it on a node whose containerd is < 2.0.7
            headers={"Authorization": authorization} if authorization else {},
        )
        # No containerd version here: the node's own `containerd --version` decides dial_timeout at boot
        # (userdata.py), and a file with a [host] table needs no version-specific workaround.
        files.append(HostsToml(m.registry, m.server, [host]))
    return files


def ca_bundle(params: RunbookParams) -> str | None:
    path = params.path(params.karpenter.mirror_ca_file)
    if path is None:
        return None
    text = path.read_text(encoding="ascii")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise MirrorConfigError(f"{path}: not a PEM certificate bundle")
    return text if text.endswith("\n") else text + "\n"
