"""Stage 3 in manifests mode against the real lab parts: Kubernetes stand-in, Nexus emulator, lab ingress.

Stages 1-2 run first on the emulator (as in the lab), the release Secret is seeded as `lab up` does, then
stage 3 plans, applies, and verifies through the ingress host names (resolved like curl --resolve).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from runbook_lab.faults import CONTROL_PATH
from runbook_lab.helm_seed import seed_helm_release
from runbook_lab.ingress import IngressProxy
from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib import kube, net
from runbook_lib import params as params_mod
from runbook_lib.helm import exposure, release, values, verify
from runbook_lib.plan import StageFailed, apply_and_confirm
from runbook_lib.registry.client import RegistryClient
from runbook_lib.secrets import REDACTOR
from runbook_lib.stages import helm as helm_stage
from tests.support.labkit import Lab, upstream_fixture
from tests.support.recording import RecordingContext

upstream = pytest.fixture(scope="module")(upstream_fixture)
KUBE_WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Stage3:
    lab: Lab
    kube: KubeStandIn
    proxy: IngressProxy
    params: params_mod.RunbookParams
    api: object
    records: dict

    def record(self, key, value) -> None:
        self.records.setdefault(key, []).append(value)

    def run(self, apply: bool) -> tuple[object, values.Overlay, release.Release]:
        rel = release.current(self.params, self.api)
        overlay = values.build_overlay(self.params, rel.values)
        path = overlay.write(self.lab.log.parent)
        plan = exposure.build_plan(self.params, self.api, apply, rel, overlay, path)
        apply_and_confirm(
            plan,
            lambda: exposure.rebuild(
                self.params, self.api, lambda: release.current(self.params, self.api), overlay, path
            ),
            self.record,
        )
        return plan, overlay, rel

    def kube_writes(self) -> list:
        return [r for r in self.kube.requests if r.method in KUBE_WRITES]


def stage3_params(
    lab: Lab, kubeconfig: Path, ingress_port: int, params_file: Path | None = None, **helm
) -> params_mod.RunbookParams:
    data = json.loads(lab.params.model_dump_json(exclude={"base_dir"}))
    data["kubernetes"] = {"kubeconfig": str(kubeconfig)}
    hosts = {}
    for up in data["upstreams"]:
        label = values.registry_label(up["registry"])
        up["mirror_url"] = f"http://{label}.mirror.lab.internal:{ingress_port}"
        hosts[f"{label}.mirror.lab.internal"] = "127.0.0.1"
    data["resolve"] = hosts
    data["helm"].update(ready_timeout_s=10, **helm)
    if params_file is not None:
        params_file.write_text(yaml.safe_dump(data))
    return params_mod.parse(data, "test", REPO_PARAMS)


REPO_PARAMS = Path(__file__).resolve().parents[2] / "parameters"


@pytest.fixture
def stage3(tmp_path, upstream, monkeypatch) -> Iterator[Stage3]:
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", standin.url)
    proxy = IngressProxy(kubeconfig).start()
    api = None
    try:
        lab.run_stages(apply=True)
        p = stage3_params(lab, kubeconfig, proxy.port)
        api = kube.api_client(p)
        seed_helm_release(api, p)
        assert proxy.wait_synced()
        standin.clear_requests()
        yield Stage3(lab, standin, proxy, p, api, {})
    finally:
        if api is not None:
            api.close()
        proxy.stop()
        standin.stop()
        lab.emulator.stop()
        REDACTOR.clear()


def test_plan_only_reads_then_apply_creates_then_rerun_writes_nothing(stage3) -> None:
    plan, _, _ = stage3.run(apply=False)
    assert plan.counts()["create"] == 4  # Service + Ingress for the docker group's and quay's connectors
    assert not stage3.kube_writes(), "plan mode wrote to the cluster"

    plan, overlay, rel = stage3.run(apply=True)
    assert plan.counts() == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
    written = stage3.kube_writes()
    assert [r.method for r in written] == ["POST"] * 4
    hub_port = stage3.params.upstream("docker.io").connector_port
    svc = stage3.kube.get("v1", "Service", f"nxrm-nxrm-ha-docker-{hub_port}", "nexusrepo")
    port = svc["spec"]["ports"][0]
    assert (port["name"], port["port"], port["targetPort"]) == (f"docker-{hub_port}", hub_port, hub_port)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert svc["metadata"]["annotations"] == {
        "meta.helm.sh/release-name": "nxrm",
        "meta.helm.sh/release-namespace": "nexusrepo",
    }
    ing = stage3.kube.get("networking.k8s.io/v1", "Ingress", f"nxrm-nxrm-ha-docker-{hub_port}", "nexusrepo")
    assert ing["spec"]["rules"][0]["host"] == "docker.mirror.lab.internal"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"

    checks = verify.verify(stage3.params, stage3.api, rel, overlay)
    assert checks and all(c.ok for c in checks), [c.record() for c in checks if not c.ok]
    names = [c.name for c in checks]
    assert "docker.mirror.lab.internal: token realm on the ingress host" in names
    assert "docker.mirror.lab.internal: pull docker.io/library/demo:1 through the ingress" in names

    again, _, _ = stage3.run(apply=True)
    assert again.counts()["unchanged"] == 4 and not again.pending
    assert stage3.kube_writes() == written, "the rerun wrote to the cluster"


def test_v2_through_the_ingress_host_and_a_real_pull(stage3) -> None:
    stage3.run(apply=True)
    url = stage3.params.upstream("docker.io").mirror_url
    with net.client(stage3.params.resolve, timeout=10) as http:
        resp = http.get(f"{url}/v2/")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == (f'Bearer realm="{url}/v2/token",service="{url}/v2/token"')
    with RegistryClient(url, transport=net.transport(stage3.params.resolve)) as reg:
        manifest = reg.resolve_platform("library/demo", "1")
        assert manifest.status == 200 and manifest.digest and manifest.digest.startswith("sha256:")
        layer = manifest.json()["layers"][0]
        assert sum(len(part) for part in reg.stream_blob("library/demo", layer["digest"])) == layer["size"]
    # Unknown host on the same ingress: ingress-nginx's default backend.
    with net.client({"nowhere.mirror.lab.internal": "127.0.0.1"}, timeout=10) as http:
        assert http.get(f"http://nowhere.mirror.lab.internal:{stage3.proxy.port}/v2/").status_code == 404


def test_drift_is_patched_and_the_node_port_kept(stage3) -> None:
    stage3.params.helm.service_type = "NodePort"
    stage3.run(apply=True)
    quay_port = stage3.params.upstream("quay.io").connector_port
    name = f"nxrm-nxrm-ha-docker-{quay_port}"
    svc = stage3.kube.get("v1", "Service", name, "nexusrepo")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    svc["spec"]["ports"][0]["targetPort"] = 9999  # someone edits the Service by hand
    stage3.kube.put(svc)
    plan, _, _ = stage3.run(apply=False)
    change = next(c for c in plan.changes if c.name == f"nexusrepo/{name}" and c.kind == "Service")
    assert change.action == "update" and list(change.diff) == ["spec.ports"]
    stage3.run(apply=True)
    port = stage3.kube.get("v1", "Service", name, "nexusrepo")["spec"]["ports"][0]
    assert port["targetPort"] == quay_port and port["nodePort"] == node_port
    assert [r.method for r in stage3.kube_writes()][-1] == "PATCH"


def test_object_of_another_release_is_not_taken_over(stage3) -> None:
    hub_port = stage3.params.upstream("docker.io").connector_port
    stage3.kube.put(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"nxrm-nxrm-ha-docker-{hub_port}",
                "namespace": "nexusrepo",
                "annotations": {
                    "meta.helm.sh/release-name": "other",
                    "meta.helm.sh/release-namespace": "nexusrepo",
                },
            },
            "spec": {"ports": [{"port": 1}]},
        }
    )
    with pytest.raises(StageFailed, match="belongs to Helm release nexusrepo/other"):
        stage3.run(apply=True)
    assert not stage3.kube_writes()


def test_verification_reports_a_missing_route(stage3) -> None:
    _, overlay, rel = stage3.run(apply=True)
    hub_port = stage3.params.upstream("docker.io").connector_port
    stage3.kube.delete("networking.k8s.io/v1", "Ingress", f"nxrm-nxrm-ha-docker-{hub_port}", "nexusrepo")
    stage3.params.helm.ready_timeout_s = 1
    checks = verify.verify(stage3.params, stage3.api, rel, overlay)
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert f"Ingress nexusrepo/nxrm-nxrm-ha-docker-{hub_port} exists" in failed
    assert "answered 404" in failed["docker.mirror.lab.internal: /v2/ answers through the ingress"]
    ctx = RecordingContext()
    with pytest.raises(StageFailed, match="the docker endpoints do not work"):
        helm_stage.enforce(ctx, checks)
    assert ctx.records["failure"]["step"] == "exposure checks"


def test_helm_command_pins_the_deployed_chart(stage3, tmp_path) -> None:
    rel = release.current(stage3.params, stage3.api)
    cmd = exposure.helm_command(stage3.params, rel, tmp_path / "overlay.yaml")
    assert cmd[:6] == ["helm", "upgrade", "nxrm", "sonatype/nxrm-ha", "--namespace", "nexusrepo"]
    assert cmd[6:11] == ["--version", "95.2.0", "--reuse-values", "-f", str(tmp_path / "overlay.yaml")]
    assert "--kubeconfig" in cmd
    if not exposure.helm_binary():
        stage3.params.helm.apply_with = "helm"
        with pytest.raises(StageFailed, match="no helm binary"):
            exposure.mode(stage3.params)
        stage3.params.helm.apply_with = "auto"
        assert exposure.mode(stage3.params) == "manifests"


def test_runbook_run_helm_apply_exits_0(stage3, tmp_path, capsys) -> None:
    """The notebook through the runner, as `runbook run helm --params F --apply` does on the lab."""
    from runbook_lib.cli import main

    params_file = tmp_path / "params.yaml"
    p = stage3_params(stage3.lab, Path(stage3.params.kubernetes.kubeconfig), stage3.proxy.port, params_file)
    data = yaml.safe_load(params_file.read_text())
    data["outputs"] = {"dir": str(tmp_path / "outputs")}
    data["nexus"]["initial_password_file"] = None
    params_file.write_text(yaml.safe_dump(data))
    assert p.helm.apply_with == "manifests"
    assert main(["run", "helm", "--params", str(params_file), "--apply"]) == 0, capsys.readouterr()
    run = json.loads(sorted((tmp_path / "outputs").glob("*/run.json"))[-1].read_text())
    stage = run["stages"][0]
    assert stage["status"] == "ok" and stage["changes"]["create"] == 4
    assert stage["checks"] and all(c["ok"] for c in stage["checks"])
    run_dir = sorted((tmp_path / "outputs").glob("*/run.json"))[-1].parent
    assert yaml.safe_load((run_dir / values.OVERLAY_FILE).read_text())["nexus"]["docker"]["enabled"] is True
    assert os.path.exists(run_dir / exposure.MANIFESTS_FILE)


def test_faults_on_the_kubernetes_api_then_a_rerun_converges(stage3) -> None:
    """503s (reads retried, writes not) and 409 conflicts on writes: each failed apply says what it
    applied; once the faults stop, a rerun leaves exactly the objects of a clean apply."""
    url = stage3.kube.url + CONTROL_PATH
    assert httpx.put(url, json={"error_rate": 0.25, "conflict_rate": 0.3, "seed": 4}).status_code == 200
    failures = []
    for _ in range(12):
        try:
            stage3.run(apply=True)
            break
        except StageFailed as err:
            record = err.failure_record()
            assert set(record["applied"]).isdisjoint(record["not_applied"])
            assert record["step"] in record["not_applied"] + record.get("outcome_unknown", [])
            failures.append(record)
        except Exception as err:  # noqa: BLE001 - a read still failing after its retries
            assert "503" in str(err), err
            failures.append({"read": str(err)})
    seen = httpx.get(url).json()["injected"]
    assert failures and (seen["error"] or seen["conflict"]), (failures, seen)

    assert httpx.delete(url).status_code == 200
    plan, overlay, rel = stage3.run(apply=True)
    again, _, _ = stage3.run(apply=True)
    assert not again.pending and again.counts()["unchanged"] == 4
    created = Counter(
        r.path.rsplit("/", 1)[1] for r in stage3.kube_writes() if r.method == "POST" and r.status < 300
    )
    assert created == {"services": 2, "ingresses": 2}, created  # each object created once, none twice
    checks = verify.verify(stage3.params, stage3.api, rel, overlay)
    assert all(c.ok for c in checks), [c.record() for c in checks if not c.ok]
