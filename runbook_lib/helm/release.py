"""Read a Helm 3 release from the cluster: its Secret (no helm binary needed) or `helm get values`.

Helm 3's default storage driver keeps each revision in a Secret ``sh.helm.release.v1.<release>.v<N>`` of
type ``helm.sh/release.v1`` in the release namespace, labelled ``name``, ``owner=helm``, ``status``,
``version`` (+ ``createdAt``/``modifiedAt``). Its ``release`` key holds the release JSON, gzipped (best
compression) and base64-encoded (helm pkg/storage/driver/util.go encodeRelease); like every Secret value
the API base64-encodes those bytes once more. Releases written before compression have no gzip magic and
are plain JSON. The ConfigMap and SQL drivers (HELM_DRIVER) are not read here.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_lib import kube
from runbook_lib.helm.values import coalesce
from runbook_lib.params import RunbookParams
from runbook_lib.plan import StageFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


RELEASE_TYPE = "helm.sh/release.v1"
_GZIP_MAGIC = b"\x1f\x8b\x08"


def secret_name(release: str, version: int) -> str:
    return f"sh.helm.release.v1.{release}.v{version}"


def encode_release(release: dict[str, Any]) -> str:
    """What Helm stores under the Secret's ``release`` key (before the API's own base64)."""
    raw = json.dumps(release, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9)).decode()


def decode_release(data: str | bytes) -> dict[str, Any]:
    """The release JSON from Helm's stored string (base64 of gzip, or of plain JSON for old releases)."""
    raw = base64.b64decode(data, validate=True)
    if raw[:3] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    release = json.loads(raw)
    if not isinstance(release, dict):
        raise ValueError("release data is not a JSON object")
    return release


def decode_secret_data(value: str) -> dict[str, Any]:
    """Decode a release Secret's ``data.release`` as the Kubernetes API returns it (base64 once more)."""
    return decode_release(base64.b64decode(value, validate=True))


@dataclass
class Release:
    name: str
    namespace: str
    version: int
    status: str
    chart: dict[str, Any]  # chart metadata: name, version, appVersion, ...
    config: dict[str, Any]  # user-supplied values (`helm get values`)
    chart_values: dict[str, Any] = field(default_factory=dict)  # the chart's defaults
    source: str = ""
    history: list[tuple[int, str]] = field(default_factory=list)  # (revision, status), oldest first

    @property
    def values(self) -> dict[str, Any]:
        """Effective values (`helm get values --all`): chart defaults merged with the user-supplied ones."""
        return coalesce(self.chart_values, self.config)

    @property
    def chart_name(self) -> str:
        return str(self.chart.get("name", ""))

    @property
    def chart_version(self) -> str:
        return str(self.chart.get("version", ""))

    def summary(self) -> str:
        return (
            f"release {self.name} in {self.namespace}: revision {self.version} ({self.status}), chart "
            f"{self.chart_name} {self.chart_version} (app {self.chart.get('appVersion', '?')}); read from "
            f"{self.source}"
        )

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "revision": self.version,
            "status": self.status,
            "chart": f"{self.chart_name}-{self.chart_version}",
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Release:
        chart = data.get("chart") or {}
        return cls(
            name=data.get("name", ""),
            namespace=data.get("namespace", ""),
            version=int(data.get("version") or 0),
            status=(data.get("info") or {}).get("status", ""),
            chart=chart.get("metadata") or {},
            config=data.get("config") or {},
            chart_values=chart.get("values") or {},
            source=source,
        )


def _secrets(api_client: ApiClient, namespace: str, release: str) -> list[dict[str, Any]]:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    items = kube.get_json(api_client, path, labelSelector=f"owner=helm,name={release}").get("items") or []
    return [s for s in items if s.get("type") == RELEASE_TYPE]


def read_from_secrets(api_client: ApiClient, namespace: str, release: str) -> Release:
    """The release as `helm upgrade --reuse-values` sees it: the deployed revision (the newest one when none
    is deployed, as Helm does after a failed first install)."""
    secrets = _secrets(api_client, namespace, release)
    if not secrets:
        raise StageFailed(
            f"no Helm release {release!r} in namespace {namespace!r} (no Secret of type "
            f"{RELEASE_TYPE} labelled owner=helm,name={release}): install the chart first, or fix "
            "helm.release / helm.namespace",
            step="read release",
        )
    revisions = sorted(secrets, key=lambda s: int(s["metadata"].get("labels", {}).get("version", "0")))
    history = [
        (int(s["metadata"]["labels"].get("version", "0")), s["metadata"]["labels"].get("status", ""))
        for s in revisions
    ]
    deployed = [s for s in revisions if s["metadata"]["labels"].get("status") == "deployed"]
    chosen = (deployed or revisions)[-1]
    try:
        data = decode_secret_data((chosen.get("data") or {})["release"])
    except (KeyError, ValueError, OSError) as err:
        raise StageFailed(
            f"Secret {chosen['metadata']['name']} does not hold a readable Helm release: {err}",
            step="read release",
        ) from None
    rel = Release.from_json(data, f"Secret {namespace}/{chosen['metadata']['name']}")
    rel.history = history
    return rel


def helm_binary() -> str | None:
    return shutil.which("helm")


def kube_flags(params: RunbookParams) -> list[str]:
    flags = []
    path = params.path(params.kubernetes.kubeconfig)
    if path:
        flags += ["--kubeconfig", str(path)]
    if params.kubernetes.context:
        flags += ["--kube-context", params.kubernetes.context]
    return flags


def _helm_json(args: list[str]) -> Any:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise StageFailed(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}", step="read release")
    return json.loads(proc.stdout or "null")


def read_with_helm(params: RunbookParams, helm: str) -> Release:
    """`helm list` for the revision and chart, `helm get values` (-a for the defaults) for the values."""
    h = params.helm
    base = [helm, "--namespace", h.namespace, *kube_flags(params)]
    listed = _helm_json([*base, "list", "--all", "--filter", f"^{h.release}$", "--output", "json"]) or []
    if not listed:
        raise StageFailed(
            f"helm list finds no release {h.release!r} in namespace {h.namespace!r}", step="read release"
        )
    entry = listed[0]
    config = _helm_json([*base, "get", "values", h.release, "--output", "json"]) or {}
    effective = _helm_json([*base, "get", "values", h.release, "--all", "--output", "json"]) or {}
    name, _, version = str(entry.get("chart", "")).rpartition("-")
    rel = Release(
        name=h.release,
        namespace=h.namespace,
        version=int(entry.get("revision") or 0),
        status=str(entry.get("status", "")),
        chart={"name": name, "version": version, "appVersion": entry.get("app_version", "")},
        config=config,
        chart_values=effective,
        source="helm get values",
    )
    return rel


def current(params: RunbookParams, api_client: ApiClient, use_helm: bool = False) -> Release:
    """The deployed release; checks it was installed from the chart the parameters name."""
    helm = helm_binary() if use_helm else None
    rel = (
        read_with_helm(params, helm)
        if helm
        else read_from_secrets(api_client, params.helm.namespace, params.helm.release)
    )
    if rel.chart_name and rel.chart_name != params.helm.flavour:
        raise StageFailed(
            f"release {rel.name} was installed from chart {rel.chart_name} {rel.chart_version}, but "
            f"helm.flavour is {params.helm.flavour}: the values differ per chart, fix helm.flavour",
            step="read release",
        )
    last = rel.history[-1] if rel.history else None
    if last and last[1].startswith("pending"):
        raise StageFailed(
            f"release {rel.name} revision {last[0]} is {last[1]}: another Helm operation is in "
            "progress (or was interrupted); resolve it (helm rollback) before this stage",
            step="read release",
        )
    return rel
