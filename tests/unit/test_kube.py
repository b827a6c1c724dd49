"""Kubernetes connection from parameters: kubeconfig and context, the api_host override, in-cluster, errors.

Requests go to the Kubernetes API stand-in (the `kube` fixture) on 127.0.0.1.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from runbook_lib import params as params_mod
from runbook_lib.kube import KubeConfigError, api_client


def make_params(kubernetes: dict[str, Any], base_dir: Path | None = None) -> params_mod.RunbookParams:
    return params_mod.parse(
        {
            "target": "unit",
            "nexus": {"url": "http://127.0.0.1:1", "admin_password": "env:NEXUS_PW"},
            "upstreams": [
                {"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:1"}
            ],
            "kubernetes": kubernetes,
        },
        base_dir=base_dir,
    )


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def two_context_kubeconfig(path: Path, live_url: str) -> Path:
    """Current context 'dead' (nothing listens), second context 'lab' pointing at the stand-in."""
    from runbook_lab.kube.kubeconfig import kubeconfig_dict

    live = kubeconfig_dict(live_url, context="lab")
    dead = kubeconfig_dict(dead_url(), context="dead")
    merged = {
        **live,
        "clusters": dead["clusters"] + live["clusters"],
        "users": dead["users"] + live["users"],
        "contexts": dead["contexts"] + live["contexts"],
        "current-context": "dead",
    }
    path.write_text(yaml.safe_dump(merged))
    return path


def git_version(api: client.ApiClient) -> str:
    return client.VersionApi(api).get_code(_request_timeout=5).git_version


def test_kubeconfig_connects_to_the_stand_in(kube, kubeconfig: Path) -> None:
    """A kubeconfig path yields a client whose host is the kubeconfig's server and which talks to it."""
    with api_client(make_params({"kubeconfig": str(kubeconfig)})) as api:
        assert api.configuration.host == kube.url
        assert git_version(api) == kube.version_info["gitVersion"]
    assert any(r.path.rstrip("/") == "/version" for r in kube.requests)


def test_bearer_token_from_kubeconfig_is_configured(kubeconfig: Path) -> None:
    """The kubeconfig user's token becomes the client's bearer Authorization."""
    from runbook_lab.kube.kubeconfig import LAB_TOKEN

    with api_client(make_params({"kubeconfig": str(kubeconfig)})) as api:
        assert api.configuration.auth_settings()["BearerToken"]["value"] == f"Bearer {LAB_TOKEN}"


def test_relative_kubeconfig_is_resolved_against_the_parameters_folder(kube, tmp_path: Path) -> None:
    """kubeconfig: relative to the parameters file's folder, not the working directory."""
    from runbook_lab.kube import write_kubeconfig

    write_kubeconfig(tmp_path / "sub" / "kc", kube.url)
    with api_client(make_params({"kubeconfig": "sub/kc"}, base_dir=tmp_path)) as api:
        assert api.configuration.host == kube.url


def test_context_selects_a_non_current_context(kube, tmp_path: Path) -> None:
    """kubernetes.context picks that context's cluster instead of current-context's."""
    path = two_context_kubeconfig(tmp_path / "kc", kube.url)
    with api_client(make_params({"kubeconfig": str(path)})) as api:
        assert api.configuration.host != kube.url  # the current context: 'dead'
    with api_client(make_params({"kubeconfig": str(path), "context": "lab"})) as api:
        assert api.configuration.host == kube.url
        assert git_version(api) == kube.version_info["gitVersion"]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "kube.api_client sets configuration.host = api_host after load_kube_config, but for a kubeconfig "
        "user "
        "with a token the loader installs refresh_api_key_hook, which Configuration.auth_settings() runs "
        "before "
        "every request and which re-applies the kubeconfig's host (KubeConfigLoader._set_config): the first "
        "request goes to the kubeconfig's server, not to api_host"
    ),
)
def test_api_host_overrides_the_kubeconfig_server(kube, tmp_path: Path) -> None:
    """api_host replaces the server of the kubeconfig (a tunnel or stand-in), keeping the rest."""
    from runbook_lab.kube import write_kubeconfig

    path = write_kubeconfig(tmp_path / "kc", dead_url())
    with api_client(make_params({"kubeconfig": str(path), "api_host": kube.url})) as api:
        assert api.configuration.host == kube.url
        assert git_version(api) == kube.version_info["gitVersion"]


def test_each_client_has_its_own_configuration(kube, tmp_path: Path) -> None:
    """Two clients from different parameters do not share (or overwrite) one configuration."""
    path = two_context_kubeconfig(tmp_path / "kc", kube.url)
    a = api_client(make_params({"kubeconfig": str(path), "context": "lab"}))
    b = api_client(make_params({"kubeconfig": str(path), "context": "dead"}))
    try:
        assert a.configuration is not b.configuration
        assert a.configuration.host == kube.url and b.configuration.host != kube.url
        assert client.Configuration.get_default_copy().host != kube.url
    finally:
        a.close()
        b.close()


def test_missing_kubeconfig_file_raises_kube_config_error(tmp_path: Path) -> None:
    """A kubeconfig path that does not exist is a KubeConfigError with the loader's reason."""
    with pytest.raises(KubeConfigError, match="^cannot load Kubernetes configuration: "):
        api_client(make_params({"kubeconfig": str(tmp_path / "absent")}))


def test_unknown_context_raises_kube_config_error(kubeconfig: Path) -> None:
    """A context the kubeconfig does not have is a KubeConfigError naming the context."""
    with pytest.raises(KubeConfigError, match="no-such-ctx"):
        api_client(make_params({"kubeconfig": str(kubeconfig), "context": "no-such-ctx"}))


def test_unreadable_kubeconfig_raises_kube_config_error(tmp_path: Path) -> None:
    """An OSError reading the kubeconfig (here: a directory) is a KubeConfigError, not a raw OSError."""
    with pytest.raises(KubeConfigError, match="cannot load Kubernetes configuration"):
        api_client(make_params({"kubeconfig": str(tmp_path)}))


def test_malformed_kubeconfig_raises_kube_config_error(tmp_path: Path) -> None:
    """A kubeconfig that is not YAML is a configuration error like any other unloadable kubeconfig."""
    path = tmp_path / "kc"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(KubeConfigError, match="cannot load Kubernetes configuration"):
        api_client(make_params({"kubeconfig": str(path)}))


def test_in_cluster_outside_a_pod_raises_kube_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """in_cluster without the service environment of a pod is a KubeConfigError."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(KubeConfigError, match="cannot load Kubernetes configuration"):
        api_client(make_params({"in_cluster": True}))


def test_in_cluster_reads_service_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In a pod: host from KUBERNETES_SERVICE_*, CA and bearer token from the service account files."""
    from kubernetes.config import incluster_config

    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token-value")
    cert.write_text("-----BEGIN CERTIFICATE-----\n")  # only read by TLS, which this test never opens
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")

    with api_client(make_params({"in_cluster": True})) as api:
        assert api.configuration.host == "https://127.0.0.1:6443"
        assert api.configuration.ssl_ca_cert == str(cert)
        # the auth scheme is case-insensitive (RFC 9110); the in-cluster loader writes "bearer"
        assert api.configuration.auth_settings()["BearerToken"]["value"].lower() == "bearer pod-token-value"


def _pod_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A pod's service environment and service-account files, and a HOME with no ~/.kube/config."""
    from kubernetes.config import incluster_config

    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token-value")
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return cert


def test_no_kubeconfig_in_a_pod_falls_back_to_in_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CronJob's pod sets no kubeconfig and no in_cluster: the service account is used."""
    cert = _pod_environment(monkeypatch, tmp_path)
    with api_client(make_params({})) as api:
        assert api.configuration.host == "https://127.0.0.1:6443"
        assert api.configuration.ssl_ca_cert == str(cert)
        assert api.configuration.auth_settings()["BearerToken"]["value"].lower() == "bearer pod-token-value"


def test_a_kubeconfig_given_in_a_pod_still_wins(
    kube, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _pod_environment(monkeypatch, tmp_path)
    with api_client(make_params({"kubeconfig": str(kubeconfig)})) as api:
        assert api.configuration.host == kube.url


def test_get_json_reads_with_the_client_auth_and_query(kube, kubeconfig: Path) -> None:
    """get_json returns the server's camelCase JSON, sends the label selector and the bearer token, and
    raises the client's ApiException (status 404) for a missing object, like the typed API methods."""
    from kubernetes.client.exceptions import ApiException

    from runbook_lib.kube import get_json

    with api_client(make_params({"kubeconfig": str(kubeconfig)})) as api:
        client.CoreV1Api(api).create_namespaced_config_map(
            "default", {"metadata": {"name": "probe", "labels": {"app": "x"}}, "data": {"someKey": "v"}}
        )
        listed = get_json(api, "/api/v1/namespaces/default/configmaps", labelSelector="app=x")
        assert [c["metadata"]["name"] for c in listed["items"]] == ["probe"]
        assert get_json(api, "/api/v1/namespaces/default/configmaps", labelSelector="app=y")["items"] == []
        assert get_json(api, "/api/v1/namespaces/default/configmaps/probe")["data"] == {"someKey": "v"}
        with pytest.raises(ApiException) as err:
            get_json(api, "/api/v1/namespaces/default/configmaps/absent")
        assert err.value.status == 404
    sent = [r for r in kube.requests if r.path.endswith("/configmaps") and r.method == "GET"]
    assert [r.query for r in sent] == ["labelSelector=app%3Dx", "labelSelector=app%3Dy"]
