"""Plan and apply stage 3, in one of two modes.

helm mode: one change, the release's values, applied with
``helm upgrade <release> <chart> --namespace <ns> --version <deployed> --reuse-values -f <overlay>``.
The chart version is pinned to the deployed one (unless ``helm.chart_version``) so the upgrade changes
values only, not Nexus.

manifests mode (no helm binary, or ``helm.apply_with: manifests``): the docker Services and Ingresses the
chart renders for the release's values + the overlay, applied with the kubernetes client and carrying Helm's
ownership label and annotations, so a later ``helm upgrade`` with the same overlay adopts them instead of
failing with "invalid ownership metadata" (helm/helm#7649). The release itself is not changed: until that
upgrade, ``helm get values`` does not show the docker keys (the notebook shows the overlay to use).
Objects are compared on the fields we set only (the API server adds clusterIP, nodePort, uid, ...); updates
are strategic merge patches, which keep an allocated nodePort (Service ports merge on ``port``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from runbook_lib import kube
from runbook_lib.helm import render
from runbook_lib.helm.release import Release, helm_binary, kube_flags
from runbook_lib.helm.values import Overlay, coalesce
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Plan, StageFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


Mode = Literal["helm", "manifests"]
MANIFESTS_FILE = "helm-docker-objects.yaml"
SMP = "application/strategic-merge-patch+json"


def mode(params: RunbookParams) -> Mode:
    wanted = params.helm.apply_with
    if wanted == "manifests":
        return "manifests"
    if helm_binary():
        return "helm"
    if wanted == "helm":
        raise StageFailed(
            "helm.apply_with is 'helm' but no helm binary is on PATH: install helm 3, or set "
            "helm.apply_with to 'manifests' (or 'auto')",
            step="choose apply mode",
        )
    return "manifests"


def helm_command(params: RunbookParams, release: Release, overlay_path: Path | str) -> list[str]:
    h = params.helm
    version = h.chart_version or release.chart_version
    cmd = ["helm", "upgrade", h.release, h.chart, "--namespace", h.namespace]
    if version:
        cmd += ["--version", version]
    return [*cmd, "--reuse-values", "-f", str(overlay_path), *kube_flags(params)]


def _run_helm(cmd: list[str]) -> None:
    proc = subprocess.run([helm_binary() or "helm", *cmd[1:]], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"helm upgrade exited {proc.returncode}: {proc.stderr.strip()[-800:]}")


# -- desired objects -----------------------------------------------------------------------------------
def desired_objects(params: RunbookParams, release: Release, overlay: Overlay) -> list[dict[str, Any]]:
    """Our endpoints' docker objects as the chart renders them after the upgrade, with Helm ownership."""
    values = coalesce(release.values, overlay.values)
    chart = {
        "name": release.chart_name or params.helm.flavour,
        "version": release.chart_version,
        "appVersion": release.chart.get("appVersion", ""),
    }
    objects = render.docker_objects(chart, release.name, release.namespace, values)
    if params.helm.flavour != "nxrm-aws-resiliency":  # named per port there; keep only our ports
        ours = {f"-docker-{ep.port}" for ep in overlay.endpoints}
        objects = [o for o in objects if any(o["metadata"]["name"].endswith(s) for s in ours)]
    return [render.with_helm_ownership(o, release.name, release.namespace) for o in objects]


def manifests_yaml(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in objects)


def write_manifests(objects: list[dict[str, Any]], run_dir: str | Path) -> Path:
    path = Path(run_dir) / MANIFESTS_FILE
    path.write_text(manifests_yaml(objects))
    return path


def owned_view(actual: Any, desired: Any) -> Any:
    """``actual`` cut down to the shape of ``desired`` (maps: desired's keys; lists of equal length: item by
    item), so server-added fields (clusterIP, nodePort, status, uid ...) never count as a difference."""
    if isinstance(desired, dict) and isinstance(actual, dict):
        return {k: owned_view(actual[k], v) for k, v in desired.items() if k in actual}
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        return [owned_view(a, d) for a, d in zip(actual, desired, strict=True)]
    return actual


def _owned_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "metadata": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
        "spec": obj["spec"],
    }


class Objects:
    """Reads and writes Services and Ingresses through the kubernetes client (raw JSON, camelCase)."""

    def __init__(self, api_client: ApiClient):
        self.api_client = api_client

    @cached_property
    def core(self) -> Any:  # the typed APIs only for writes: their import costs ~0.5 s (kube.get_json)
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @cached_property
    def net(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self.api_client)

    def _read(self, path: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return kube.get_json(self.api_client, path)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Service":
            return self._read(f"/api/v1/namespaces/{namespace}/services/{name}")
        return self._read(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}")

    def namespace_exists(self, name: str) -> bool:
        return self._read(f"/api/v1/namespaces/{name}") is not None

    def create(self, obj: dict[str, Any], namespace: str) -> None:
        if obj["kind"] == "Service":
            self.core.create_namespaced_service(
                namespace, obj, field_manager="runbook", _preload_content=False
            )
        else:
            self.net.create_namespaced_ingress(
                namespace, obj, field_manager="runbook", _preload_content=False
            )

    def patch(self, obj: dict[str, Any], namespace: str) -> None:
        body = _owned_fields(obj)
        name = obj["metadata"]["name"]
        if obj["kind"] == "Service":
            self.core.patch_namespaced_service(
                name, namespace, body, field_manager="runbook", _content_type=SMP, _preload_content=False
            )
        else:
            self.net.patch_namespaced_ingress(
                name, namespace, body, field_manager="runbook", _content_type=SMP, _preload_content=False
            )


def _manifests_plan(
    plan: Plan, params: RunbookParams, api_client: ApiClient, objects: list[dict[str, Any]], release: Release
) -> None:
    store = Objects(api_client)
    for ns in sorted({render.namespace_of(o, release.namespace) for o in objects}):
        if not store.namespace_exists(ns):
            raise StageFailed(
                f"namespace {ns} does not exist: is Nexus installed there (helm.namespace, "
                "namespaces.nexusNs.name)?",
                step="read objects",
            )
    for obj in objects:
        ns = render.namespace_of(obj, release.namespace)
        name = obj["metadata"]["name"]
        actual = store.get(obj["kind"], ns, name)
        if actual is not None:
            conflict = render.ownership_conflict(actual, release.name, release.namespace)
            if conflict:
                raise StageFailed(
                    f"{obj['kind']} {ns}/{name} exists and {conflict}; not taking it over",
                    step="read objects",
                )
        desired = _owned_fields(obj)
        plan.compare(
            obj["kind"],
            f"{ns}/{name}",
            owned_view(actual, desired) if actual is not None else None,
            desired,
            create=lambda o=obj, n=ns: store.create(o, n),
            update=lambda o=obj, n=ns: store.patch(o, n),
            secret_keys=(),
        )


def build_plan(
    params: RunbookParams,
    api_client: ApiClient,
    apply: bool,
    release: Release,
    overlay: Overlay,
    overlay_path: Path | str,
    how: Mode | None = None,
) -> Plan:
    how = how or mode(params)
    plan = Plan("helm", apply)
    if how == "helm":
        cmd = helm_command(params, release, overlay_path)
        plan.compare(
            "helm release values",
            f"{release.namespace}/{release.name}",
            owned_view(release.values, overlay.values),
            overlay.values,
            update=lambda: _run_helm(cmd),
            secret_keys=(),
            note=" ".join(cmd),
        )
    else:
        _manifests_plan(plan, params, api_client, desired_objects(params, release, overlay), release)
    return plan


def rebuild(
    params: RunbookParams,
    api_client: ApiClient,
    release_reader: Callable[[], Release],
    overlay: Overlay,
    overlay_path: Path | str,
    how: Mode | None = None,
) -> Plan:
    """A plan-mode plan from freshly read state (for apply_and_confirm)."""
    return build_plan(params, api_client, False, release_reader(), overlay, overlay_path, how)
