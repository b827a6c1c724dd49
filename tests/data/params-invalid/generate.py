"""Regenerate the invalid-parameters corpus from parameters/lab.yaml and parameters/eks-example.yaml.

    .venv/bin/python tests/data/params-invalid/generate.py

Each case changes one thing. Every file starts with YAML comments: `# defect:` (what is wrong),
`# field:` (the path the error must name) and optionally `# secret:` (a value that no output may contain).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LAB = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
EKS = yaml.safe_load((REPO / "parameters" / "eks-example.yaml").read_text())
LAB_TEXT = (REPO / "parameters" / "lab.yaml").read_text()

Mut = Callable[[dict], object]
CASES: list[tuple[str, str, str, dict, Mut, str | None]] = []


def case(name: str, defect: str, field: str, base: dict, mutate: Mut, secret: str | None = None) -> None:
    CASES.append((name, defect, field, base, mutate, secret))


def up(i: int, **kv: object) -> Mut:
    return lambda d: d["upstreams"][i].update(kv)


def sec(section: str, **kv: object) -> Mut:
    return lambda d: d[section].update(kv)


L, E = LAB, EKS
# -- URLs
case("url-space", "space inside nexus.url", "nexus.url", L, sec("nexus", url="http://127.0.0.1:18081 /x"))
case("url-port-65536", "port above 65535", "nexus.url", L, sec("nexus", url="http://127.0.0.1:65536"))
case("url-port-0", "port 0", "nexus.url", L, sec("nexus", url="http://127.0.0.1:0"))
case("url-port-text", "non-numeric port", "nexus.url", L, sec("nexus", url="http://127.0.0.1:http"))
case("url-no-host", "URL without a host", "nexus.url", L, sec("nexus", url="https://"))
case(
    "url-userinfo-nexus",
    "user:password@ in nexus.url",
    "nexus.url",
    L,
    sec("nexus", url="http://admin:Pa55word-nx@127.0.0.1:18081"),
    "Pa55word-nx",
)
case(
    "url-userinfo-mirror",
    "user:password@ in a mirror_url",
    "upstreams[0].mirror_url",
    L,
    up(0, mirror_url="http://puller:Mirr0r-secret@docker.mirror.lab.internal:18080"),
    "Mirr0r-secret",
)
case(
    "url-userinfo-remote",
    "token@ in a remote_url",
    "upstreams[0].remote_url",
    E,
    up(0, remote_url="https://dckr_pat_abcdef123456@registry-1.docker.io"),
    "dckr_pat_abcdef123456",
)
case(
    "url-long-label",
    "host label of 64 characters",
    "upstreams[1].remote_url",
    L,
    up(1, remote_url="https://" + "g" * 64 + ".example.com"),
)
case(
    "url-long-host",
    "host name over 253 characters",
    "upstreams[1].remote_url",
    E,
    up(1, remote_url="https://" + ".".join(["a" * 60] * 5)),
)
case(
    "url-non-ascii-host",
    "Cyrillic 'о' in a host (confusable)",
    "upstreams[0].remote_url",
    E,
    up(0, remote_url="https://registry-1.d\u043ecker.io"),
)
case(
    "url-idna-mirror",
    "non-ASCII (IDNA) mirror host",
    "upstreams[2].mirror_url",
    E,
    up(2, mirror_url="https://qu\u00e4y.mirror.example.com"),
)
case(
    "url-scheme-ftp",
    "ftp scheme",
    "upstreams[0].mirror_url",
    L,
    up(0, mirror_url="ftp://docker.mirror.lab.internal"),
)
case(
    "url-query",
    "query string in a mirror_url",
    "upstreams[0].mirror_url",
    L,
    up(0, mirror_url="http://docker.mirror.lab.internal:18080/?ns=docker.io"),
)
case(
    "url-underscore-host",
    "underscore in a host name",
    "upstreams[3].mirror_url",
    L,
    up(3, mirror_url="http://ghcr_mirror.lab.internal:18080"),
)
case(
    "url-bad-ipv4",
    "IPv4 address out of range",
    "upstreams[1].remote_url",
    L,
    up(1, remote_url="http://127.0.0.999:15004"),
)
case(
    "url-counters-port",
    "counters_url port above 65535",
    "verification.counters_url",
    L,
    sec("verification", counters_url="http://127.0.0.1:180810/_lab/counters"),
)
case(
    "url-aws-endpoint-space",
    "space in aws.endpoint_url",
    "aws.endpoint_url",
    L,
    sec("aws", endpoint_url="http://127.0.0.1: 15050"),
)
case(
    "url-api-host-userinfo",
    "credentials in kubernetes.api_host",
    "kubernetes.api_host",
    L,
    sec("kubernetes", api_host="http://kube:K8s-pass-77@127.0.0.1:16443"),
    "K8s-pass-77",
)
case(
    "url-bad-ipv6",
    "malformed bracketed IPv6 host",
    "nexus.url",
    L,
    sec("nexus", url="http://[fe80::zz]:18081"),
)
# -- cross-checks between upstreams
case("dup-name", "two upstreams with one name", "upstreams[1].name", L, up(1, name="docker-hub"))
case("dup-registry", "two upstreams for one registry", "upstreams[2].registry", L, up(2, registry="gcr.io"))
case(
    "dup-mirror-url",
    "two upstreams share one mirror_url",
    "upstreams[1].mirror_url",
    L,
    up(1, mirror_url="http://docker.mirror.lab.internal:18080"),
)
case(
    "dup-mirror-url-case",
    "same mirror_url but for case and trailing slash",
    "upstreams[2].mirror_url",
    L,
    up(2, mirror_url="http://GCR.mirror.lab.internal:18080/"),
)
case(
    "dup-mirror-url-default-port",
    "same mirror_url spelled with its default port :443",
    "upstreams[1].mirror_url",
    E,
    up(1, mirror_url="https://docker.mirror.example.com:443"),
)
case(
    "port-is-nexus",
    "connector_port equal to the Nexus port",
    "upstreams[0].connector_port",
    L,
    up(0, connector_port=18081),
)
case(
    "port-is-nexus-default",
    "connector_port 443, the port of https nexus.url",
    "upstreams[3].connector_port",
    E,
    up(3, connector_port=443),
)
case(
    "port-is-ingress",
    "connector_port equal to lab.ingress_port",
    "upstreams[2].connector_port",
    L,
    up(2, connector_port=18080),
)
case(
    "port-shared",
    "two upstreams on one connector port",
    "upstreams[1].connector_port",
    L,
    up(1, connector_port=18082),
)
case("group-shared", "one group for two registries", "upstreams[1].group", L, up(1, group="docker"))
case(
    "ingress-host-clash",
    "helm.hosts gives quay.io the host gcr.io gets",
    "upstreams[2].registry",
    E,
    lambda d: d["helm"].update(hosts={"quay.io": "gcr.mirror.example.com"}),
)
case(
    "proxy-group-clash",
    "a proxy named like another upstream's group",
    "upstreams[1].name",
    L,
    up(1, name="docker"),
)
# -- strict integers and booleans
case("port-true", "connector_port: true", "upstreams[0].connector_port", L, up(0, connector_port=True))
case(
    "port-string",
    "connector_port as a string",
    "upstreams[0].connector_port",
    L,
    up(0, connector_port="18082"),
)
case(
    "port-float", "connector_port as a float", "upstreams[1].connector_port", L, up(1, connector_port=18083.0)
)
case("count-true", "repetitions: true", "verification.repetitions", L, sec("verification", repetitions=True))
case("concurrency-zero", "concurrency: 0", "verification.concurrency", L, sec("verification", concurrency=0))
case(
    "kube-port-false", "lab.kube_port: false", "lab.kube_port", L, lambda d: d["lab"].update(kube_port=False)
)
case(
    "age-float", "metadata_max_age 1440.5", "upstreams[0].metadata_max_age", L, up(0, metadata_max_age=1440.5)
)
case(
    "limit-true",
    "lab.dockerhub.limit: true",
    "lab.dockerhub.limit",
    L,
    lambda d: d["lab"]["dockerhub"].update(limit=True),
)
case(
    "probe-timeout-string",
    "probe_timeout_s as a string",
    "karpenter.probe_timeout_s",
    E,
    sec("karpenter", probe_timeout_s="3"),
)
case(
    "eula-yes-string",
    "accept_eula: 'yes' (a string)",
    "nexus.accept_eula",
    L,
    sec("nexus", accept_eula="yes"),
)
case(
    "node-pool-count-true",
    "lab.node_pools count true",
    "lab.node_pools.default",
    L,
    lambda d: d["lab"].update(node_pools={"default": True}),
)
case(
    "registry-port-65536",
    "registry port above 65535",
    "lab.registries",
    L,
    lambda d: d["lab"]["registries"].update({"docker.io": {"port": 65536}}),
)
# -- image references (distribution grammar)
case("image-colons", "image nginx:::", "verification.images[0]", L, sec("verification", images=["nginx:::"]))
case(
    "image-uppercase",
    "uppercase repository",
    "verification.images[1]",
    L,
    sec("verification", images=["docker.io/library/demo:1", "docker.io/Library/big:lab"]),
)
case(
    "image-unqualified",
    "image without registry",
    "verification.images[0]",
    E,
    sec("verification", images=["nginx:1.27"]),
)
case(
    "image-long-tag",
    "tag of 129 characters",
    "verification.images[0]",
    L,
    sec("verification", images=["docker.io/library/demo:" + "t" * 129]),
)
case(
    "image-short-digest",
    "digest of 3 hex digits",
    "verification.images[0]",
    L,
    sec("verification", images=["docker.io/library/demo@sha256:abc"]),
)
case(
    "image-space",
    "space in an image reference",
    "verification.images[2]",
    L,
    sec(
        "verification",
        images=["docker.io/library/demo:1", "docker.io/library/big:lab", "quay.io/lab/ tool:1"],
    ),
)
case(
    "image-double-slash",
    "empty path component",
    "verification.images[0]",
    E,
    sec("verification", images=["docker.io//nginx:1.27"]),
)
# -- Kubernetes, DNS and Helm names
case("ns-uppercase", "helm.namespace with uppercase", "helm.namespace", L, sec("helm", namespace="NexusRepo"))
case("ns-too-long", "helm.namespace of 64 characters", "helm.namespace", L, sec("helm", namespace="n" * 64))
case(
    "ns-dot",
    "namespace with a dot (a label, not a subdomain)",
    "verification.namespace",
    E,
    sec("verification", namespace="pull.tests"),
)
case(
    "ns-underscore",
    "verification.namespace with '_'",
    "verification.namespace",
    L,
    sec("verification", namespace="pull_tests"),
)
case(
    "karpenter-ns",
    "karpenter.namespace with uppercase",
    "karpenter.namespace",
    E,
    sec("karpenter", namespace="Karpenter"),
)
case(
    "nodeclass-upper",
    "node class name with uppercase",
    "karpenter.node_classes[0]",
    L,
    sec("karpenter", node_classes=["Default"]),
)
case(
    "nodepool-space",
    "node pool name with a space",
    "karpenter.node_pools[1]",
    E,
    sec("karpenter", node_pools=["default", "gpu pool"]),
)
case(
    "suffix-empty-label",
    "host_suffix with an empty label",
    "helm.host_suffix",
    L,
    sec("helm", host_suffix="mirror..lab.internal"),
)
case(
    "suffix-leading-dash",
    "host_suffix label starting with '-'",
    "helm.host_suffix",
    L,
    sec("helm", host_suffix="-mirror.lab.internal"),
)
case(
    "suffix-long-label",
    "host_suffix label of 64 characters",
    "helm.host_suffix",
    E,
    sec("helm", host_suffix="m" * 64 + ".example.com"),
)
case(
    "ingress-class-upper",
    "ingress_class with uppercase",
    "helm.ingress_class",
    L,
    sec("helm", ingress_class="Nginx"),
)
case("release-54", "Helm release name of 54 characters", "helm.release", L, sec("helm", release="r" * 54))
case("release-upper", "Helm release name with uppercase", "helm.release", E, sec("helm", release="NXRM"))
case(
    "tls-secret-underscore", "tls_secret with '_'", "helm.tls_secret", E, sec("helm", tls_secret="mirror_tls")
)
case(
    "hosts-bad-value",
    "helm.hosts value not a DNS name",
    "helm.hosts.docker.io",
    E,
    lambda d: d["helm"].update(hosts={"docker.io": "docker mirror"}),
)
case("registry-upper", "registry with uppercase", "upstreams[0].registry", L, up(0, registry="Docker.io"))
case("registry-port", "registry port above 65535", "upstreams[1].registry", E, up(1, registry="gcr.io:70000"))
case(
    "lab-registry-key",
    "lab.registries key not a host",
    "lab.registries",
    L,
    lambda d: d["lab"]["registries"].update({"docker io": {"port": 15005}}),
)
case(
    "lab-nodepool-name",
    "lab.node_pools name with uppercase",
    "lab.node_pools",
    L,
    lambda d: d["lab"].update(node_pools={"Default": 2}),
)
case(
    "resolve-host",
    "resolve key not a host name",
    "resolve",
    L,
    lambda d: d["resolve"].update({"bad host": "127.0.0.1"}),
)
# -- Nexus repository names
case("repo-upper", "upstream name with uppercase", "upstreams[0].name", L, up(0, name="Docker-Hub"))
case("group-underscore", "group starting with '_'", "upstreams[0].group", L, up(0, group="_docker"))
# -- secrets
case(
    "secret-scheme-value",
    "a value where a reference belongs (looks like scheme:)",
    "nexus.admin_password",
    L,
    sec("nexus", admin_password="hunter2:rest-of-it"),
    "hunter2",
)
case(
    "secret-plain",
    "a plain password",
    "security.pull_password",
    E,
    sec("security", pull_password="S3cretPull!"),
    "S3cretPull!",
)
case(
    "secret-env-bad",
    "env reference with an invalid name",
    "upstreams[0].credentials.password",
    E,
    lambda d: d["upstreams"][0]["credentials"].update(password="env:tok3n-value!"),
    "tok3n-value!",
)
# -- other fields
case("unknown-key", "unknown key", "nexus.colour", L, sec("nexus", colour="blue"))
case("target-slash", "target with '/'", "target", L, lambda d: d.update(target="lab/../x"))
case(
    "demo-address",
    "demo_source_address not an IP",
    "verification.demo_source_address",
    L,
    sec("verification", demo_source_address="localhost"),
)

# -- byte- and text-level defects (built from lab.yaml's text)
TEXT_CASES: list[tuple[str, str, str, bytes]] = []


def text_case(name: str, defect: str, field: str, body: bytes) -> None:
    TEXT_CASES.append((name, defect, field, body))


def _nested(depth: int) -> str:
    return (
        "nexus:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))
        + "  " * (depth + 1)
        + "v: 1\n"
    )


text_case(
    "dup-key-top",
    "section nexus given twice (YAML would merge silently)",
    "nexus",
    (LAB_TEXT + "\nnexus:\n  url: http://127.0.0.1:9\n").encode(),
)
text_case(
    "dup-key-nested",
    "nexus.url given twice",
    "nexus.url",
    LAB_TEXT.replace(
        "  url: http://127.0.0.1:18081\n", "  url: http://127.0.0.1:18081\n  url: http://127.0.0.1:9\n"
    ).encode(),
)
text_case(
    "dup-key-upstream",
    "connector_port twice in one upstream",
    "upstreams[1].connector_port",
    LAB_TEXT.replace(
        "    connector_port: 18083\n", "    connector_port: 18083\n    connector_port: 18090\n"
    ).encode(),
)
text_case(
    "non-utf8",
    "a Latin-1 byte in a value",
    "line 9",
    LAB_TEXT.encode().replace(b"admin_user: admin", b"admin_user: adm\xefn"),
)
text_case("binary", "a binary blob", "(file)", b"\x00\x01" + random.Random(11).randbytes(510))
text_case("deep-nesting", "YAML nested 200 levels deep", "line", _nested(200).encode())
text_case(
    "deep-flow", "flow sequence nested 5000 levels", "line", ("target: " + "[" * 5000 + "]" * 5000).encode()
)
text_case(
    "alias",
    "YAML alias (billion-laughs building block)",
    "line",
    LAB_TEXT.replace("  admin_user: admin\n", "  admin_user: &u admin\n  min_version: *u\n", 1).encode(),
)
text_case("syntax", "unclosed flow sequence", "line", (LAB_TEXT + "\nextra: [1, 2\n").encode())
text_case(
    "tab-indent",
    "tab used for indentation",
    "line",
    LAB_TEXT.replace("  admin_user", "\tadmin_user", 1).encode(),
)
text_case("top-list", "the document is a list", "(top level)", b"- target: lab\n")
text_case("empty-doc", "no document at all", "(top level)", b"")
text_case("two-docs", "two YAML documents", "line", (LAB_TEXT + "\n---\ntarget: other\n").encode())


def main() -> None:
    for old in HERE.glob("*.yaml"):
        old.unlink()
    for name, defect, field, base, mutate, secret in CASES:
        data = copy.deepcopy(base)
        mutate(data)
        head = f"# defect: {defect}\n# field: {field}\n" + (f"# secret: {secret}\n" if secret else "")
        body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        (HERE / f"{name}.yaml").write_text(head + body, encoding="utf-8")
    for name, defect, field, raw in TEXT_CASES:
        head = f"# defect: {defect}\n# field: {field}\n".encode()
        (HERE / f"{name}.yaml").write_bytes(head + raw)
    print(f"{len(CASES) + len(TEXT_CASES)} files in {HERE}")


if __name__ == "__main__":
    main()
