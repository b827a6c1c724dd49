"""Stage 3 overlays per chart flavour, checked against the charts' own values files and rendered examples.

The reference files (tests/data/reference/nexus-helm/<chart>/) are the charts' byte-identical values.yaml and
the
Service/Ingress documents the real charts rendered for a docker connector on 8082 (helm-python-sdk, Helm SDK
v4.2.3). An overlay key must exist in the chart's values (or in its commented example, or be read by the
chart as the rendered example proves); our rendering of the overlay must have the examples' shape.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib import params as params_mod
from runbook_lib.helm import charts, render, values
from runbook_lib.plan import StageFailed

REPO = Path(__file__).resolve().parents[2]
FLAVOURS = ("nxrm-ha", "nexus-repository-manager", "nxrm-aws-resiliency")


def chart_dir(reference_dir: Path, flavour: str) -> Path:
    return reference_dir / "nexus-helm" / flavour


def load_values(path: Path) -> dict[str, Any]:
    # nexus-repository-manager's files carry trailing tabs PyYAML rejects
    return yaml.safe_load(re.sub(r"[ \t]+\n", "\n", path.read_text()))


def rendered_docs(reference_dir: Path, flavour: str) -> list[dict[str, Any]]:
    return [
        d
        for d in yaml.safe_load_all(
            (chart_dir(reference_dir, flavour) / "rendered-docker-8082.yaml").read_text()
        )
        if d
    ]


def make_params(flavour: str, upstreams: list[dict] | None = None, **helm: Any) -> params_mod.RunbookParams:
    data = yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())
    data["upstreams"] = upstreams or [
        {
            "name": "docker-hub",
            "registry": "docker.io",
            "remote_url": "https://registry-1.docker.io",
            "group": "docker",
            "connector_port": 8082,
            "mirror_url": "https://docker.example.com",
        }
    ]
    data["helm"] = {
        "flavour": flavour,
        "hosts": {"docker.io": "docker.example.com"},
        "tls_secret": "docker-tls",
        "ingress_class": "alb" if flavour == "nxrm-aws-resiliency" else "nginx",
        **helm,
    }
    data["security"] = {"mode": "anonymous"}
    return params_mod.parse(data, "test", REPO / "parameters")


def all_upstreams() -> list[dict]:
    data = yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())
    return data["upstreams"]


# -- keys exist in the charts --------------------------------------------------------------------------
def value_paths(doc: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            if not path.endswith("annotations"):
                out |= value_paths(value, path)
    return out


def commented_registry_keys(values_text: str) -> set[str]:
    """Keys of the commented `# registries:` example entry under nexus.docker."""
    block = re.search(r"#\s*registries:\n((?:\s*#.*\n)+)", values_text)
    return set(re.findall(r"#\s*-?\s*(\w+):", block.group(1))) if block else set()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_overlay_keys_exist_in_the_chart_values(reference_dir, flavour) -> None:
    cdir = chart_dir(reference_dir, flavour)
    text = cdir.joinpath("values.yaml").read_text()
    known = value_paths(load_values(cdir / "values.yaml"))
    example = value_paths(yaml.safe_load((cdir / "example-values-docker-8082.yaml").read_text()))
    overlay = values.build_overlay(make_params(flavour), charts.chart(flavour).defaults)
    paths = value_paths(overlay.values)
    assert paths, overlay.values
    for path in paths:
        if path in known:
            continue
        if path == "nexus.docker.registries":  # commented example in both list-based charts
            entry_keys = set().union(*(e.keys() for e in overlay.values["nexus"]["docker"]["registries"]))
            assert entry_keys <= commented_registry_keys(text), (flavour, entry_keys)
            continue
        # Not in the defaults, but read by the chart: the rendered example shows its effect.
        assert path in example, f"{flavour}: {path} is neither in values.yaml nor read by the chart"
    if flavour == "nxrm-aws-resiliency":
        assert "ingress.dockerIngress.host" in paths - known  # the one key the defaults leave out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_embedded_chart_defaults_match_the_chart_values(reference_dir, flavour) -> None:
    """charts.py keeps a subset of each chart's defaults (for the lab release): it must be the chart's."""
    chart_values = load_values(chart_dir(reference_dir, flavour) / "values.yaml")
    meta = yaml.safe_load((chart_dir(reference_dir, flavour) / "Chart.yaml").read_text())
    c = charts.chart(flavour)
    assert (c.name, c.version, c.app_version, c.deprecated) == (
        meta["name"],
        meta["version"],
        meta["appVersion"],
        bool(meta.get("deprecated")),
    )

    def check(sub: Any, full: Any, path: str) -> None:
        if isinstance(sub, dict) and sub:
            assert isinstance(full, dict), path
            for key, value in sub.items():
                assert key in full, f"{path}.{key}"
                check(value, full[key], f"{path}.{key}")
        else:
            assert sub == full or (sub in ({}, None) and full in ({}, None)), (path, sub, full)

    check(c.defaults, chart_values, flavour)


# -- rendered shape ------------------------------------------------------------------------------------
def docker_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "docker" in d["metadata"]["name"]]


def without_annotations(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("annotations", None)
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rendered_overlay_has_the_shape_of_the_chart_example(reference_dir, flavour) -> None:
    cdir = chart_dir(reference_dir, flavour)
    meta = yaml.safe_load((cdir / "Chart.yaml").read_text())
    example_values = yaml.safe_load((cdir / "example-values-docker-8082.yaml").read_text())
    params = make_params(flavour, service_type="NodePort" if flavour == "nxrm-aws-resiliency" else None)
    # What the release would hold after `helm upgrade --reuse-values -f overlay` on the example install.
    for key in ("nexus", "service"):  # the example's docker part is what the overlay must produce
        example_values.get(key, {}).pop("docker", None)
    example_values.get("ingress", {}).pop("dockerIngress", None)
    installed = values.coalesce(load_values(cdir / "values.yaml"), example_values)
    overlay = values.build_overlay(params, installed)
    ours = render.docker_objects(meta, "nxrm", "nexusrepo", values.coalesce(installed, overlay.values))
    golden = docker_docs(rendered_docs(reference_dir, flavour))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in ours) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in golden
    )
    for obj in ours:
        ref = next(
            d for d in golden if d["kind"] == obj["kind"] and d["metadata"]["name"] == obj["metadata"]["name"]
        )
        # Same object (kinds, names, labels, ports, paths, host rules, TLS) apart from annotations, of which
        # ours carry the example's and more (timeouts, body size).
        assert without_annotations(obj) == without_annotations(ref)
        assert (ref["metadata"].get("annotations") or {}).items() <= (
            obj["metadata"].get("annotations") or {}
        ).items()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_render_reproduces_the_chart_output_exactly(reference_dir, flavour) -> None:
    """Our templates-in-Python against the real charts' output for the example values (docker + UI
    Services)."""
    cdir = chart_dir(reference_dir, flavour)
    meta = yaml.safe_load((cdir / "Chart.yaml").read_text())
    vals = values.coalesce(
        load_values(cdir / "values.yaml"),
        yaml.safe_load((cdir / "example-values-docker-8082.yaml").read_text()),
    )
    ours = render.docker_objects(meta, "nxrm", "nexusrepo", vals) + render.ui_services(
        meta, "nxrm", "nexusrepo", vals
    )
    golden = {(d["kind"], d["metadata"]["name"]): d for d in rendered_docs(reference_dir, flavour)}
    assert len(ours) >= 3
    for obj in ours:
        assert obj == golden[(obj["kind"], obj["metadata"]["name"])]


# -- per-flavour behaviour -----------------------------------------------------------------------------
def test_label_scheme() -> None:
    assert [
        values.registry_label(r)
        for r in (
            "docker.io",
            "gcr.io",
            "quay.io",
            "ghcr.io",
            "registry.k8s.io",
            "public.ecr.aws",
            "registry.gitlab.com",
            "mcr.microsoft.com",
        )
    ] == ["docker", "gcr", "quay", "ghcr", "k8s", "ecr", "gitlab", "mcr"]


def test_eks_example_hosts_follow_the_label_scheme() -> None:
    p = params_mod.load(REPO / "parameters" / "eks-example.yaml")
    eps = values.endpoints(p)
    assert [(e.registry, e.host, e.port, e.target_port) for e in eps] == [
        ("docker.io", "docker.mirror.example.com", 8082, 8082),
        ("gcr.io", "gcr.mirror.example.com", 8083, 8083),
        ("quay.io", "quay.mirror.example.com", 8084, 8084),
        ("ghcr.io", "ghcr.mirror.example.com", 8085, 8085),
        ("registry.k8s.io", "k8s.mirror.example.com", 8086, 8086),
        ("public.ecr.aws", "ecr.mirror.example.com", 8087, 8087),
    ]
    overlay = values.build_overlay(p, charts.NXRM_HA.defaults)
    regs = overlay.values["nexus"]["docker"]["registries"]
    assert len(regs) == 6 and all(r["secretName"] == "mirror-example-com-tls" for r in regs)
    assert regs[0]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert "nginx.ingress.kubernetes.io/ssl-redirect" not in regs[0]["annotations"]  # https mirrors
    assert overlay.values["ingress"] == {"ingressClassName": "nginx"}
    assert not overlay.limits


def test_lab_parameters_expose_every_connector_over_http() -> None:
    p = params_mod.load(REPO / "parameters" / "lab.yaml")
    overlay = values.build_overlay(p, charts.NXRM_HA.defaults)
    regs = overlay.values["nexus"]["docker"]["registries"]
    assert [r["host"] for r in regs] == [
        f"{x}.mirror.lab.internal" for x in ("docker", "gcr", "quay", "ghcr")
    ]
    assert [r["port"] for r in regs] == [r["targetPort"] for r in regs] == [18082, 18083, 18084, 18085]
    # http mirror URLs behind a chart that always renders tls: ingress-nginx must not redirect to https
    assert all(r["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "false" for r in regs)
    assert all(host in p.resolve for host in (r["host"] for r in regs))


def test_aws_resiliency_with_several_endpoints_is_a_limit() -> None:
    p = make_params("nxrm-aws-resiliency", all_upstreams(), hosts={}, host_suffix="mirror.example.com")
    overlay = values.build_overlay(p, charts.NXRM_AWS_RESILIENCY.defaults)
    assert overlay.values["service"]["docker"] == {
        "enabled": True,
        "type": "NodePort",
        "port": 8082,
        "targetPort": 8082,
    }
    assert overlay.values["ingress"]["dockerIngress"]["host"] == "docker.mirror.example.com"
    assert overlay.values["ingress"]["dockerIngress"]["annotations"]["kubernetes.io/ingress.class"] == "alb"
    assert (
        len(overlay.limits) == 1
        and "gcr.io" in overlay.limits[0]
        and "ecr.mirror.example.com" in overlay.limits[0]
    )
    assert any("tls_secret is not used" in n for n in overlay.notes)
    assert any("subnet-1,subnet-2" in n for n in overlay.notes)
    records: list = []
    with pytest.raises(StageFailed, match="one docker port per release"):
        overlay.raise_for_limits(lambda k, v: records.append((k, v)))
    assert records[0][0] == "failure" and records[0][1]["step"] == "chart limits"


def test_legacy_chart_shares_annotations_and_enables_the_ui_ingress() -> None:
    p = make_params(
        "nexus-repository-manager", all_upstreams()[:2], hosts={}, host_suffix="mirror.example.com"
    )
    overlay = values.build_overlay(p, charts.NEXUS_REPOSITORY_MANAGER.defaults)
    assert overlay.values["nexus"]["docker"]["registries"] == [
        {"host": "docker.mirror.example.com", "port": 8082, "secretName": "docker-tls"},
        {"host": "gcr.mirror.example.com", "port": 8083, "secretName": "docker-tls"},
    ]
    assert overlay.values["ingress"]["enabled"] is True
    assert overlay.values["ingress"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"
    assert any("shared by the UI Ingress" in n for n in overlay.notes)
    assert any("repo.demo" in n for n in overlay.notes)
    assert not overlay.limits


def test_legacy_chart_cannot_mix_http_and_https_endpoints() -> None:
    ups = all_upstreams()[:2]
    ups[1]["mirror_url"] = "http://gcr.mirror.example.com"
    p = make_params("nexus-repository-manager", ups, hosts={}, host_suffix="mirror.example.com")
    overlay = values.build_overlay(p, charts.NEXUS_REPOSITORY_MANAGER.defaults)
    assert overlay.limits and "one annotation set" in overlay.limits[0]


def test_registries_of_other_ports_are_kept_and_ours_replaced() -> None:
    p = make_params("nxrm-ha")
    current = values.coalesce(
        charts.NXRM_HA.defaults,
        {
            "nexus": {
                "docker": {
                    "enabled": True,
                    "registries": [
                        {"host": "old-docker.example.com", "port": 8082, "targetPort": 8081},
                        {"host": "hosted.example.com", "port": 5000, "targetPort": 5000},
                    ],
                }
            }
        },
    )
    overlay = values.build_overlay(p, current)
    regs = overlay.values["nexus"]["docker"]["registries"]
    assert [(r["host"], r["port"]) for r in regs] == [
        ("docker.example.com", 8082),
        ("hosted.example.com", 5000),
    ]
    diff = values.owned_diff(current, overlay)
    assert "nexus.docker.registries" in diff and "nexus.docker.type" in diff
    rows = {r["key"]: r for r in values.comparison_rows({}, current, overlay)}
    assert rows["nexus.docker.enabled"]["changes"] == "" and rows["nexus.docker.type"]["changes"] == "yes"


def test_user_annotations_override_class_defaults() -> None:
    p = make_params(
        "nxrm-ha",
        annotations={
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "1800",
            "example.com/team": "platform",
        },
    )
    entry = values.build_overlay(p).values["nexus"]["docker"]["registries"][0]
    assert entry["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "1800"
    assert entry["annotations"]["example.com/team"] == "platform"
    assert entry["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda h, u: h.update(hosts={}, host_suffix=None) or u[0].pop("mirror_url"),
            "no ingress host for docker.io",
        ),
        (lambda h, u: u[0].update(mirror_url="http://127.0.0.1:18082"), "does not point at its ingress host"),
        (
            lambda h, u: (
                h.update(hosts={"docker.io": "x.example.com", "gcr.io": "x.example.com"})
                or u[0].pop("mirror_url")
            ),
            "share the ingress host",
        ),
    ],
)
def test_host_problems_are_clear_failures(change, message) -> None:
    data = yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())
    data["upstreams"] = all_upstreams()[:2]
    data["upstreams"][1].pop("mirror_url")
    data["helm"]["hosts"] = {"docker.io": "docker.mirror.example.com"}
    change(data["helm"], data["upstreams"])
    if message == "share the ingress host":  # refused earlier since issue #11: at params check, exit 2
        with pytest.raises(params_mod.ParamsError, match="ingress host"):
            params_mod.parse(data, "test", REPO / "parameters")
        return
    p = params_mod.parse(data, "test", REPO / "parameters")
    with pytest.raises(StageFailed, match=message):
        values.endpoints(p)


def test_mirror_host_is_the_ingress_host_without_suffix() -> None:
    ups = all_upstreams()[:1]
    p = make_params("nxrm-ha", ups, hosts={})
    assert values.endpoints(p)[0].host == "docker.mirror.example.com"


def test_overlay_file_and_masked_side_by_side(tmp_path) -> None:
    p = make_params("nxrm-ha")
    overlay = values.build_overlay(p)
    path = overlay.write(tmp_path)
    assert yaml.safe_load(path.read_text()) == overlay.values
    shown = values.SideBySide(
        "install", {"secret": {"nexusAdminSecret": {"adminPassword": "hunter2"}}}, "overlay", overlay.values
    )
    assert "hunter2" not in shown._repr_html_() and "hunter2" not in str(shown)
    assert "docker.example.com" in shown._repr_html_()


def test_key_table_names_every_chart() -> None:
    rows = charts.key_table()
    assert [r["chart"] for r in rows] == list(FLAVOURS)
    assert [r["status"] for r in rows] == ["maintained", "deprecated", "deprecated"]
