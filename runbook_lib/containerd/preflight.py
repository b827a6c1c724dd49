"""Node-side containerd checks: will this node's containerd read the hosts.toml files we write?

Checks on a containerd ``config.toml`` text and version (facts: the EKS AMIs' configs in
awslabs/amazon-eks-ami
templates/al2/runtime/containerd-config.toml and nodeadm's; containerd docs/cri/config.md: legacy
`registry.mirrors` beside `config_path` unloads the CRI plugin; `config_path` is empty by default):
- ``config_path`` set in the CRI registry config (version 2: ``plugins."io.containerd.grpc.v1.cri".registry``,
  version 3+: ``plugins."io.containerd.cri.v1.images".registry``; version 1: ``plugins.cri.registry``).
  The default is empty, and then CRI ignores certs.d entirely;
- no legacy ``registry.mirrors`` beside ``config_path``: the CRI plugin then fails to load ("`mirrors` cannot
be
  set when `config_path` is provided"), containerd keeps running and only logs a warning
  (pkg/cri/config/config.go);
- the containerd >= 2.1 transfer-service trap: CRI pulls go through the transfer service unless a local-pull
  setting is present (``discard_unpacked_layers = true``, ``use_local_image_pull = true``, legacy
  mirrors/configs/auths, non-default ``max_concurrent_downloads``), and the transfer path does not split a
  colon-separated ``config_path`` (``/etc/containerd/certs.d:/etc/docker/certs.d``, what EKS AMIs ship): the
  hosts.toml files are then never found and every pull goes upstream (containerd #12636);
- version facts: ``_default`` host folder from 1.6.17, ``dial_timeout`` read from 2.0.7 / 2.1.0
  (containerd/containerd#12136, #11106; the boot script decides it per node, userdata.py), the empty
  ``[host]`` workaround below 2.0 (containerd/containerd#10027).

An unknown containerd version is taken as 2.x (``ASSUMED_UNKNOWN``): current EKS AL2023 AMIs ship 2.x
(awslabs/amazon-eks-ami CHANGELOG.md per release; nodeadm renders
nodeadm/internal/containerd/config2.template.toml for it), so the 2.1+ traps are the ones to rule out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from runbook_lib.containerd.hosts import ContainerdVersion
from runbook_lib.plan import Check

CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_IMAGES_V3 = "io.containerd.cri.v1.images"
# What an unknown node containerd is taken to be: the 2.x that current EKS AMIs ship
ASSUMED_UNKNOWN = ContainerdVersion(2, 1, 0)
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3  # containerd's default (CRI config DefaultImageConfig / DefaultConfig)


@dataclass(frozen=True)
class RegistrySettings:
    """What a config.toml says about image pulls, wherever its version keeps it."""

    config_path: str
    mirrors: bool
    configs_or_auths: bool
    discard_unpacked_layers: bool | None
    use_local_image_pull: bool | None
    max_concurrent_downloads: int | None
    config_version: int


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)  # type: ignore[assignment]
    return doc


def registry_settings(doc: dict[str, Any]) -> RegistrySettings:
    version = int(doc.get("version", 1) or 1)
    plugins = doc.get("plugins", {}) or {}
    registries = [
        _get(plugins, CRI_V2, "registry"),
        _get(plugins, CRI_IMAGES_V3, "registry"),
        _get(plugins, "cri", "registry"),
    ]
    registries = [r for r in registries if isinstance(r, dict)]
    config_path = next((r["config_path"] for r in registries if r.get("config_path")), "")
    first = [
        _get(plugins, CRI_IMAGES_V3, "discard_unpacked_layers"),
        _get(plugins, CRI_V2, "containerd", "discard_unpacked_layers"),
        _get(plugins, "cri", "containerd", "discard_unpacked_layers"),
    ]
    downloads = [
        _get(plugins, CRI_IMAGES_V3, "max_concurrent_downloads"),
        _get(plugins, CRI_V2, "max_concurrent_downloads"),
        _get(plugins, "cri", "max_concurrent_downloads"),
    ]
    return RegistrySettings(
        config_path=str(config_path),
        mirrors=any(r.get("mirrors") for r in registries),
        configs_or_auths=any(r.get("configs") or r.get("auths") for r in registries),
        discard_unpacked_layers=next((v for v in first if v is not None), None),
        use_local_image_pull=_get(plugins, CRI_IMAGES_V3, "use_local_image_pull"),
        max_concurrent_downloads=next((v for v in downloads if v is not None), None),
        config_version=version,
    )


def uses_local_pull(s: RegistrySettings) -> bool:
    """containerd >= 2.1 keeps the old local pull path (which splits config_path on ':') only with one of
    these
    (internal/cri/config/config.go CheckLocalImagePullConfigs @ v2.2.0)."""
    return bool(
        s.use_local_image_pull
        or s.discard_unpacked_layers
        or s.mirrors
        or s.configs_or_auths
        or (
            s.max_concurrent_downloads is not None
            and s.max_concurrent_downloads != DEFAULT_MAX_CONCURRENT_DOWNLOADS
        )
    )


def check_config(
    text: str, version: ContainerdVersion | None, certs_dir: str = "/etc/containerd/certs.d"
) -> list[Check]:
    """Checks on one node's config.toml (as `containerd config dump` prints it, or the file)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [Check.graded("containerd config.toml parses", "fail", f"not valid TOML: {err}")]
    s = registry_settings(doc)
    checks = []
    dirs = [d for d in s.config_path.split(":") if d]
    if not s.config_path:
        checks.append(
            Check.graded(
                "config_path set",
                "fail",
                "the CRI registry has no config_path: containerd ignores "
                "every hosts.toml (the default is empty)",
            )
        )
    elif certs_dir not in dirs:
        checks.append(
            Check.graded(
                "config_path set",
                "fail",
                f"config_path is {s.config_path!r}, which does not include "
                f"{certs_dir} where the userData writes hosts.toml",
            )
        )
    else:
        checks.append(Check.graded("config_path set", "ok", f"config_path = {s.config_path!r}"))
    if s.mirrors and s.config_path:
        checks.append(
            Check.graded(
                "no legacy registry.mirrors beside config_path",
                "fail",
                "legacy registry.mirrors together with config_path: the CRI plugin fails to load "
                '("`mirrors` cannot be set when `config_path` is provided"), kubelet cannot run pods',
            )
        )
    elif s.mirrors:
        checks.append(
            Check.graded(
                "no legacy registry.mirrors beside config_path",
                "warn",
                "legacy registry.mirrors without config_path: hosts.toml files are not read; "
                "remove mirrors and set config_path",
            )
        )
    else:
        checks.append(
            Check.graded("no legacy registry.mirrors beside config_path", "ok", "no legacy mirrors")
        )
    if s.configs_or_auths:
        checks.append(
            Check.graded(
                "no legacy registry.configs/auths",
                "warn",
                "legacy registry.configs/auths are deprecated (removal targeted for 2.4) and switch "
                "containerd >= 2.1 back to the local pull path",
            )
        )
    checks.append(transfer_service_check(s, version))
    return checks


def transfer_service_check(s: RegistrySettings, version: ContainerdVersion | None) -> Check:
    name = "containerd >= 2.1 transfer service finds hosts.toml"
    colon = ":" in s.config_path
    if not colon:
        return Check.graded(name, "ok", "config_path is one folder: the transfer service reads it as is")
    if uses_local_pull(s):
        return Check.graded(
            name,
            "ok",
            "a local-pull setting (e.g. discard_unpacked_layers = true) keeps the pull path "
            "that splits the colon-separated config_path",
        )
    assumed = version is None
    version = version or ASSUMED_UNKNOWN
    if (version.major, version.minor) >= (2, 1):
        which = (
            "containerd version unknown, taken as 2.x as current EKS AMIs ship "
            "(set karpenter.containerd_version if the nodes run 1.x)"
            if assumed
            else f"containerd {version.major}.{version.minor}"
        )
        return Check.graded(
            name,
            "fail",
            f"{which}: the transfer service takes "
            f"config_path {s.config_path!r} as ONE folder, so no hosts.toml is found and every "
            "pull goes upstream; keep discard_unpacked_layers = true (the AL2023 default), set "
            "use_local_image_pull = true, or use a single folder",
        )
    return Check.graded(
        name, "ok", f"containerd {version.major}.{version.minor} has no transfer-service CRI pulls"
    )


def check_version(version: ContainerdVersion | None) -> list[Check]:
    if version is None:
        return [
            Check.graded(
                "containerd version known",
                "skipped",
                "karpenter.containerd_version not set: taken as 2.x (what current EKS AMIs ship) for the "
                "config checks; the boot script decides dial_timeout on each node from `containerd "
                "--version` (written from 2.0.7)",
            )
        ]
    text = f"{version.major}.{version.minor}.{version.patch}"
    # informational: the boot script decides on each node from its own `containerd --version`
    notes = [
        "dial_timeout written"
        if version.supports_dial_timeout()
        else "no dial_timeout (read from 2.0.7): a black-holed mirror costs the 30 s dial per request"
    ]
    if (version.major, version.minor, version.patch) < (1, 6, 17):
        notes.append("no certs.d/_default support (< 1.6.17)")
    if version.needs_empty_host_table():
        notes.append(
            "a hosts.toml without [host] is rejected (< 2.0, containerd#10027): the empty [host] "
            "workaround applies"
        )
    return [Check.graded("containerd version known", "ok", f"containerd {text}: " + "; ".join(notes))]


def check_nodeconfig_fragment(text: str, version: ContainerdVersion | None, source: str) -> list[Check]:
    """AL2023 NodeConfig `spec.containerd.config` is deep-merged by nodeadm into its template (which sets
    config_path to two folders and discard_unpacked_layers = true for containerd 2.x). Switching that off
    turns the transfer-service trap on (for example Karpenter's own test data, aws/karpenter-provider-aws
    pkg/providers/amifamily/bootstrap/mime/test_data/mime_valid.txt: discard_unpacked_layers = false)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [
            Check.graded(f"{source}: NodeConfig containerd.config parses", "fail", f"not valid TOML: {err}")
        ]
    s = registry_settings(doc)
    checks = []
    if s.mirrors:
        checks.append(
            Check.graded(
                f"{source}: no legacy registry.mirrors",
                "fail",
                "NodeConfig adds legacy registry.mirrors; nodeadm's template sets config_path, so the CRI "
                "plugin would fail to load",
            )
        )
    effective = version or ASSUMED_UNKNOWN  # unknown: the 2.x current AMIs ship
    if s.discard_unpacked_layers is False and (effective.major, effective.minor) >= (2, 1):
        checks.append(
            Check.graded(
                f"{source}: discard_unpacked_layers kept",
                "fail",
                ("" if version else "containerd version unknown, taken as 2.x: ")
                + "NodeConfig sets discard_unpacked_layers = false: on containerd >= 2.1 that enables the "
                "transfer service, which does not split nodeadm's two-folder config_path, so hosts.toml "
                "is never found",
            )
        )
    if s.config_path:
        checks.append(
            Check.graded(
                f"{source}: config_path",
                "ok" if "/etc/containerd/certs.d" in s.config_path.split(":") else "fail",
                f"NodeConfig sets config_path = {s.config_path!r}",
            )
        )
    if not checks:
        checks.append(
            Check.graded(
                f"{source}: NodeConfig containerd.config", "ok", "nothing that affects registry hosts"
            )
        )
    return checks
