"""Stage 3's rendered docker objects per ingress class, against what each controller documents it needs.

The ALB checks are written from the AWS Load Balancer Controller's documentation, not from the runbook's
code (kubernetes-sigs/aws-load-balancer-controller docs/guide/ingress/annotations.md, cert_discovery.md,
ingress_class.md; pkg/ingress/model_build_listener.go for the listen-ports default):

- the Ingress is of the class (``spec.ingressClassName`` or the deprecated ``kubernetes.io/ingress.class``);
- ``target-type`` defaults to ``instance``, which needs a NodePort or LoadBalancer Service; with ClusterIP no
  target group is made (issue #1695); ``ip`` works with any Service type. Service annotations win;
- Ingresses with one ``group.name`` share one ALB; an Ingress without one is its own implicit group;
  group names are lowercase alphanumerics, '-' or '.', at most 63;
- "Exclusive" annotations must be set on one Ingress of a group or with one value on all of them;
  ``listen-ports`` merge, but one port cannot be HTTP and HTTPS; ``ssl-redirect`` turns every HTTP listener
  of the group into a redirect;
- ``listen-ports`` defaults to HTTP:80 (HTTPS:443 only with ``certificate-arn``): nodes' mirror URL must be
  one of the listeners;
- the health check (``healthcheck-path``, default ``/``; port default ``traffic-port``; ``success-codes``
  default 200) must pass on a docker connector, where Nexus answers ``/v2/`` with 401 (Bearer challenge,
  also for anonymous pulls: sonatype/nexus-public#651) or 200.

For ingress-nginx (kubernetes.github.io/ingress-nginx user-guide annotations): class nginx, no body-size
limit (default 1m gives 413 on large uploads) and no HTTPS redirect for an http mirror behind a tls block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from runbook_lib import params as params_mod
from runbook_lib.helm import render, values

REPO = Path(__file__).resolve().parents[2]
FLAVOURS = ("nxrm-ha", "nexus-repository-manager", "nxrm-aws-resiliency")
A = "alb.ingress.kubernetes.io/"
EXCLUSIVE = (  # MergeBehavior "Exclusive" in annotations.md
    "load-balancer-name",
    "ip-address-type",
    "scheme",
    "subnets",
    "security-groups",
    "customer-owned-ipv4-pool",
    "load-balancer-attributes",
    "wafv2-acl-arn",
    "waf-acl-id",
    "shield-advanced-protection",
    "ssl-redirect",
    "ssl-policy",
)
GROUP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
NEXUS_V2_ANSWERS = {200, 401}


# -- inputs --------------------------------------------------------------------------------------------
def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(re.sub(r"[ \t]+\n", "\n", path.read_text()))  # legacy chart: trailing tabs


def example_upstreams() -> list[dict[str, Any]]:
    return yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())["upstreams"]


def make_params(
    flavour: str, ingress_class: str, upstreams: list[dict[str, Any]] | None = None, **helm: Any
) -> params_mod.RunbookParams:
    data = yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())
    ups = upstreams if upstreams is not None else example_upstreams()
    data["upstreams"] = ups[:1] if flavour == "nxrm-aws-resiliency" else ups
    data["nexus"]["expect_edition"] = "PRO"  # nxrm-ha is a Pro chart (several replicas)
    data["helm"] = {
        "flavour": flavour,
        "host_suffix": "mirror.example.com",
        "tls_secret": "mirror-tls",
        "ingress_class": ingress_class,
        **helm,
    }
    return params_mod.parse(data, "test", REPO / "parameters")


def installed_values(reference_dir: Path, flavour: str) -> dict[str, Any]:
    """The chart's own defaults plus the reference install, without its docker part."""
    cdir = reference_dir / "nexus-helm" / flavour
    example = yaml.safe_load((cdir / "example-values-docker-8082.yaml").read_text())
    for key in ("nexus", "service"):
        example.get(key, {}).pop("docker", None)
    example.get("ingress", {}).pop("dockerIngress", None)
    return values.coalesce(load_values(cdir / "values.yaml"), example)


def rendered(
    reference_dir: Path, p: params_mod.RunbookParams
) -> tuple[values.Overlay, list[dict[str, Any]], list[dict[str, Any]]]:
    """(overlay, docker Ingresses, docker Services) as the chart renders them after the upgrade."""
    flavour = p.helm.flavour
    meta = yaml.safe_load((reference_dir / "nexus-helm" / flavour / "Chart.yaml").read_text())
    installed = installed_values(reference_dir, flavour)
    overlay = values.build_overlay(p, installed)
    objects = render.docker_objects(meta, "nxrm", "nexusrepo", values.coalesce(installed, overlay.values))
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    services = [o for o in objects if o["kind"] == "Service"]
    assert ingresses and services
    return overlay, ingresses, services


def mirror_urls(p: params_mod.RunbookParams) -> dict[str, str]:
    return {ep.host: ep.url for ep in values.endpoints(p)}


# -- the ALB controller's requirements -----------------------------------------------------------------
def ingress_class_of(ing: dict[str, Any]) -> str | None:
    return ing["spec"].get("ingressClassName") or (ing["metadata"].get("annotations") or {}).get(
        "kubernetes.io/ingress.class"
    )


def success_codes(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        out |= set(range(int(low), int(high or low) + 1))
    return out


def alb_problems(
    ingresses: list[dict[str, Any]], services: list[dict[str, Any]], urls: dict[str, str], cls: str = "alb"
) -> tuple[list[str], int]:
    """(problems, number of ALBs) for docker Ingresses the AWS Load Balancer Controller reconciles."""
    problems: list[str] = []
    svc_by_name = {s["metadata"]["name"]: s for s in services}
    groups: dict[str, list[tuple[dict[str, str], str]]] = {}
    for ing in ingresses:
        name = ing["metadata"]["name"]
        ann = ing["metadata"].get("annotations") or {}
        if ingress_class_of(ing) != cls:
            problems.append(f"{name}: class {ingress_class_of(ing)!r}, not {cls!r}")
        (rule,) = ing["spec"]["rules"]
        host = rule["host"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        svc = svc_by_name[backend["name"]]
        svc_ann = svc["metadata"].get("annotations") or {}

        def setting(key: str, default: str | None, ann=ann, svc_ann=svc_ann) -> str | None:
            return svc_ann.get(A + key, ann.get(A + key, default))  # Service annotations win

        target_type = setting("target-type", "instance")
        if target_type == "instance" and svc["spec"].get("type") not in ("NodePort", "LoadBalancer"):
            problems.append(
                f"{name}: instance targets on a {svc['spec'].get('type')} Service: no target group"
            )
        if target_type not in ("instance", "ip"):
            problems.append(f"{name}: target-type {target_type!r}")
        if setting("healthcheck-path", "/") != "/v2/":
            problems.append(f"{name}: health check path {setting('healthcheck-path', '/')!r} is not /v2/")
        if setting("healthcheck-port", "traffic-port") != "traffic-port":
            problems.append(f"{name}: health check not on the traffic (docker connector) port")
        codes = success_codes(setting("success-codes", "200") or "200")
        if not codes >= NEXUS_V2_ANSWERS:
            problems.append(f"{name}: success codes {sorted(codes)} miss a /v2/ answer of Nexus")
        default_ports = '[{"HTTPS": 443}]' if A + "certificate-arn" in ann else '[{"HTTP": 80}]'
        try:
            entries = json.loads(ann.get(A + "listen-ports", default_ports))
            listeners = {(proto, port) for entry in entries for proto, port in entry.items()}
        except (ValueError, TypeError, AttributeError):
            problems.append(
                f"{name}: listen-ports {ann.get(A + 'listen-ports')!r} is not a JSON list of maps"
            )
            continue
        url = urlsplit(urls[host])
        want = (url.scheme.upper(), url.port or (443 if url.scheme == "https" else 80))
        if want not in listeners:
            problems.append(f"{name}: nodes use {urls[host]} but the ALB listens on {sorted(listeners)}")
        group = ann.get(A + "group.name")
        if group is not None and (len(group) > 63 or not GROUP_NAME.match(group)):
            problems.append(f"{name}: invalid group name {group!r}")
        for listener in listeners:
            groups.setdefault(group or f"implicit:{name}", []).append((ann, f"{listener[0]}:{listener[1]}"))
    for group, members in groups.items():
        for key in EXCLUSIVE:
            seen = {a[A + key] for a, _ in members if A + key in a}
            if len(seen) > 1:
                problems.append(f"group {group}: exclusive {key} has several values {sorted(seen)}")
        by_port: dict[str, set[str]] = {}
        for _, listener in members:
            proto, port = listener.split(":")
            by_port.setdefault(port, set()).add(proto)
        problems += [f"group {group}: port {p} is {sorted(v)}" for p, v in by_port.items() if len(v) > 1]
        if any(A + "ssl-redirect" in a for a, _ in members) and any(
            lst.startswith("HTTP:") for _, lst in members
        ):
            problems.append(f"group {group}: ssl-redirect redirects its HTTP listeners")
    return problems, len(groups)


# -- ALB -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target_type", ["ip", "instance"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_alb_objects_meet_the_controller_requirements_with_one_alb(
    reference_dir, flavour, target_type
) -> None:
    p = make_params(flavour, "alb", alb={"target_type": target_type})
    overlay, ingresses, services = rendered(reference_dir, p)
    assert not overlay.limits, overlay.limits
    assert len(ingresses) == len(values.endpoints(p)) == (1 if flavour == "nxrm-aws-resiliency" else 6)
    problems, albs = alb_problems(ingresses, services, mirror_urls(p))
    assert problems == []
    assert albs == 1  # one ALB for every docker host
    types = {s["spec"]["type"] for s in services}
    if target_type == "instance":
        assert types == {"NodePort"}
    elif flavour != "nxrm-aws-resiliency":  # that chart's default stays NodePort
        assert types == {"ClusterIP"}  # ip targets work with ClusterIP
    assert {i["metadata"]["annotations"][A + "group.name"] for i in ingresses} == {"nexusrepo-nxrm-docker"}
    assert {i["metadata"]["annotations"][A + "scheme"] for i in ingresses} == {"internal"}
    assert any("resolve to the ALB" in n and "helm.ready_timeout_s=60" in n for n in overlay.notes)
    # no ingress-nginx defaults of ours (the legacy chart's own default annotation stays: maps merge)
    nginx_keys = {k for i in ingresses for k in i["metadata"]["annotations"] if k.startswith("nginx.")}
    legacy_default = {"nginx.ingress.kubernetes.io/proxy-body-size"}
    assert nginx_keys == (legacy_default if flavour == "nexus-repository-manager" else set())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_requirements_check_rejects_what_stage_3_rendered_before(reference_dir, flavour) -> None:
    """ClusterIP Services, no target-type, no group, no listen-ports: what the issue found."""
    p = make_params(flavour, "alb", service_type="ClusterIP")
    _, ingresses, services = rendered(reference_dir, p)
    for ing in ingresses:
        for key in ("target-type", "group.name", "listen-ports"):
            ing["metadata"]["annotations"].pop(A + key)
    problems, albs = alb_problems(ingresses, services, mirror_urls(p))
    assert albs == len(ingresses)
    assert sum("no target group" in x for x in problems) == len(ingresses)
    assert sum("but the ALB listens on [('HTTP', 80)]" in x for x in problems) == len(ingresses)  # https URLs


def test_mixed_http_and_https_mirrors_share_one_alb_on_two_listeners(reference_dir) -> None:
    ups = example_upstreams()
    ups[1]["mirror_url"] = "http://gcr.mirror.example.com"
    ups[2]["mirror_url"] = "https://quay.mirror.example.com:8443"
    p = make_params("nxrm-ha", "alb", ups, alb={"group_name": "team.mirror", "scheme": "internet-facing"})
    overlay, ingresses, services = rendered(reference_dir, p)
    assert not overlay.limits
    problems, albs = alb_problems(ingresses, services, mirror_urls(p))
    assert problems == [] and albs == 1
    ports = {
        i["spec"]["rules"][0]["host"]: i["metadata"]["annotations"][A + "listen-ports"] for i in ingresses
    }
    assert ports["gcr.mirror.example.com"] == '[{"HTTP":80}]'
    assert ports["quay.mirror.example.com"] == '[{"HTTPS":8443}]'
    assert ports["docker.mirror.example.com"] == '[{"HTTPS":443}]'
    assert {i["metadata"]["annotations"][A + "group.name"] for i in ingresses} == {"team.mirror"}
    assert any("certificate discovery" in n and "quay.mirror.example.com" in n for n in overlay.notes)
    assert any("tls secretName" in n for n in overlay.notes)


def test_legacy_chart_cannot_give_its_single_annotation_set_two_listeners(reference_dir) -> None:
    ups = example_upstreams()[:2]
    ups[1]["mirror_url"] = "http://gcr.mirror.example.com"
    overlay = values.build_overlay(
        make_params("nexus-repository-manager", "alb", ups),
        installed_values(reference_dir, "nexus-repository-manager"),
    )
    assert any("one annotation set" in x for x in overlay.limits)


@pytest.mark.parametrize(
    ("helm", "upstream_change", "message"),
    [
        (
            {"annotations": {A + "ssl-redirect": "443"}},
            {"mirror_url": "http://gcr.mirror.example.com"},
            "ssl-redirect",
        ),
        ({"annotations": {A + "listen-ports": '[{"HTTP": 80}]'}}, {}, "but the ALB would listen on HTTP:80"),
        ({"annotations": {A + "listen-ports": "80"}}, {}, "not a JSON list"),
        (
            {"annotations": {A + "target-type": "instance"}, "service_type": "ClusterIP"},
            {},
            "instance targets need",
        ),
        ({}, {"mirror_url": "http://gcr.mirror.example.com:443"}, "same port [443]"),
    ],
)
def test_alb_settings_the_controller_would_not_route_are_limits(
    reference_dir, helm, upstream_change, message
) -> None:
    ups = example_upstreams()[:2]
    ups[1].update(upstream_change)
    p = make_params("nxrm-ha", "alb", ups, **helm)
    overlay, ingresses, services = rendered(reference_dir, p)
    assert any(message in x for x in overlay.limits), overlay.limits
    problems, _ = alb_problems(ingresses, services, mirror_urls(p))
    assert problems  # the independent check agrees that this would not work


def test_legacy_instance_targets_make_the_shared_service_a_node_port(reference_dir) -> None:
    p = make_params("nexus-repository-manager", "alb", alb={"target_type": "instance"})
    overlay = values.build_overlay(p, installed_values(reference_dir, "nexus-repository-manager"))
    assert overlay.values["service"] == {"type": "NodePort"}
    assert any("the UI Service shares it" in n for n in overlay.notes)
    assert any("UI Ingress shares the ALB annotations" in n for n in overlay.notes)


def test_a_custom_class_name_for_the_alb_controller(reference_dir) -> None:
    p = make_params("nxrm-ha", "internal-alb", ingress_controller="alb")
    _, ingresses, services = rendered(reference_dir, p)
    problems, albs = alb_problems(ingresses, services, mirror_urls(p), cls="internal-alb")
    assert problems == [] and albs == 1
    # an unknown controller gets no class-specific annotations at all
    _, ingresses, _ = rendered(reference_dir, make_params("nxrm-ha", "traefik"))
    assert all(not (i["metadata"].get("annotations") or {}) for i in ingresses)


@pytest.mark.parametrize(
    ("helm", "field"),
    [
        ({"alb": {"group_name": "Team_Mirror"}}, "helm.alb.group_name"),
        ({"alb": {"group_name": "x" * 64}}, "helm.alb.group_name"),
        ({"alb": {"scheme": "public"}}, "helm.alb.scheme"),
        ({"alb": {"target_type": "instance"}, "service_type": "ClusterIP"}, "helm"),
    ],
)
def test_bad_alb_parameters_name_the_field(helm, field) -> None:
    with pytest.raises(params_mod.ParamsError) as err:
        make_params("nxrm-ha", "alb", **helm)
    assert field in [path for path, _ in err.value.problems], err.value.problems


# -- nginx ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nginx_objects(reference_dir, flavour) -> None:
    ups = example_upstreams()
    ups[0]["mirror_url"] = "http://docker.mirror.example.com"  # one http mirror behind the chart's tls block
    p = make_params(flavour, "nginx", ups)
    overlay, ingresses, services = rendered(reference_dir, p)
    if flavour == "nexus-repository-manager":  # one annotation set: http and https cannot mix
        assert any("one annotation set" in x for x in overlay.limits)
        p = make_params(flavour, "nginx")
        overlay, ingresses, services = rendered(reference_dir, p)
    assert not overlay.limits
    assert {s["spec"]["type"] for s in services} == {
        "NodePort" if flavour == "nxrm-aws-resiliency" else "ClusterIP"
    }
    for ing in ingresses:
        ann = ing["metadata"].get("annotations") or {}
        assert ingress_class_of(ing) == "nginx"
        assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
        assert ann["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
        assert not {A + k for k in ("target-type", "group.name", "listen-ports", "healthcheck-path")} & set(
            ann
        )
        host = ing["spec"]["rules"][0]["host"]
        if ing["spec"].get("tls") and mirror_urls(p)[host].startswith("http://"):
            assert ann["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"
        else:
            assert "nginx.ingress.kubernetes.io/ssl-redirect" not in ann
