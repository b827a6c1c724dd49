"""AL2/AL2023 userData: the boot script run for real (bash, coreutils, curl) below a sandbox root, and the
MIME merge that keeps the user's parts byte for byte.

The script runs unprivileged through its root override (EKS_MIRROR_ROOT). "Mirrors" for the boot probe are
tiny loopback HTTP servers answering /v2/ with a chosen status; the real-containerd pulls are in
test_karpenter_node_containerd.py.
"""

from __future__ import annotations

import base64
import email
import os
import shutil
import tomllib
from collections.abc import Iterator

import pytest

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lib.containerd.hosts import validate
from runbook_lib.karpenter import credentials, mime, userdata
from runbook_lib.karpenter import nodes as stage
from tests.support.karpenter import make_params, no_secret, run_script, script_for, tree, upstream

PASSWORD = "s3cret-pull-PW"


class FakeRegistryRoot(LabHandler):
    """Answers GET /v2/ with the server's `status` (200/401 = a registry, anything else = not one)."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.hits.append(self.url_path)  # type: ignore[attr-defined]
        self.reply(self.server.status, "{}", "application/json")  # type: ignore[attr-defined]


@pytest.fixture
def mirror_factory() -> Iterator:
    servers = []

    def start(status: int) -> LabHTTPServer:
        server = LabHTTPServer(("127.0.0.1", 0), FakeRegistryRoot)
        server.status, server.hits = status, []  # type: ignore[attr-defined]
        serve_in_thread(server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    server = LabHTTPServer(("127.0.0.1", 0), FakeRegistryRoot)
    port = server.server_address[1]
    server.server_close()
    return port


def url(server: LabHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def two_upstreams(mirror_a: str, mirror_b: str) -> list[dict]:
    return [
        upstream("docker.io", "https://registry-1.docker.io", mirror_a, "docker-hub"),
        upstream("quay.io", "https://quay.io", mirror_b),
    ]


# -- the script on disk -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["AL2", "AL2023"])
def test_script_run_twice_leaves_identical_valid_hosts_toml(tmp_path, mirror_factory, family) -> None:
    a, b = mirror_factory(200), mirror_factory(401)  # 401 = a registry asking for a token: up
    params = make_params(upstreams=two_upstreams(url(a), url(b)), ami_family=family)
    script = script_for(params)
    root = tmp_path / "node"
    first = run_script(script, root)
    assert first.returncode == 0, first.stderr
    files = tree(root)
    assert set(files) == {
        "etc/containerd/certs.d/docker.io/hosts.toml",
        "etc/containerd/certs.d/quay.io/hosts.toml",
    }
    second = run_script(script, root)
    assert second.returncode == 0, second.stderr
    assert tree(root) == files  # byte-identical, and no temp file left behind
    docker = tomllib.loads(files["etc/containerd/certs.d/docker.io/hosts.toml"].decode())
    assert docker == {
        "server": "https://registry-1.docker.io",
        "host": {url(a): {"capabilities": ["pull", "resolve"]}},
    }
    for text in files.values():
        assert validate(text.decode()) == []
    assert "2 of 2 hosts.toml" in second.stderr
    assert a.hits == ["/v2/", "/v2/"] and b.hits == ["/v2/", "/v2/"]


def test_script_writes_only_below_the_root_override(tmp_path, mirror_factory) -> None:
    a = mirror_factory(200)
    params = make_params(
        upstreams=[upstream("docker.io", "https://registry-1.docker.io", url(a), "docker-hub")]
    )
    run_script(script_for(params), tmp_path / "root")
    written = [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "root").as_posix() for p in written] == [
        "etc/containerd/certs.d/docker.io/hosts.toml"
    ]
    assert oct(written[0].stat().st_mode & 0o777) == "0o644"


def test_boot_probe_is_per_upstream_and_a_down_mirror_gets_no_file(tmp_path, mirror_factory) -> None:
    up, not_registry = mirror_factory(401), mirror_factory(404)
    ups = [
        upstream("docker.io", "https://registry-1.docker.io", url(up), "docker-hub"),
        upstream("quay.io", "https://quay.io", f"http://127.0.0.1:{closed_port()}"),
        upstream("ghcr.io", "https://ghcr.io", url(not_registry)),
    ]
    result = run_script(script_for(make_params(upstreams=ups, probe_timeout_s=2)), tmp_path / "n")
    assert result.returncode == 0  # a mirror problem never fails the node's boot
    assert set(tree(tmp_path / "n")) == {"etc/containerd/certs.d/docker.io/hosts.toml"}
    assert "no registry answer from http://127.0.0.1" in result.stderr and "HTTP 404" in result.stderr
    assert "1 of 3 hosts.toml" in result.stderr


def test_probe_off_writes_every_file_even_with_the_mirror_down(tmp_path) -> None:
    ups = [
        upstream(
            "docker.io", "https://registry-1.docker.io", f"http://127.0.0.1:{closed_port()}", "docker-hub"
        )
    ]
    script = script_for(make_params(upstreams=ups, probe_mirror_at_boot=False))
    assert "curl" not in script
    run_script(script, tmp_path / "n")
    assert set(tree(tmp_path / "n")) == {"etc/containerd/certs.d/docker.io/hosts.toml"}


def test_path_style_endpoint_gets_v2_and_override_path_and_is_probed_there(tmp_path, mirror_factory) -> None:
    m = mirror_factory(200)
    ups = [
        upstream(
            "docker.io", "https://registry-1.docker.io", f"{url(m)}/repository/docker-group", "docker-hub"
        )
    ]
    run_script(script_for(make_params(upstreams=ups)), tmp_path / "n")
    doc = tomllib.loads((tmp_path / "n/etc/containerd/certs.d/docker.io/hosts.toml").read_text())
    assert doc["host"] == {
        f"{url(m)}/repository/docker-group/v2": {"capabilities": ["pull", "resolve"], "override_path": True}
    }
    assert m.hits == ["/repository/docker-group/v2/"]


def test_ca_bundle_is_written_once_and_referenced_relative_to_each_hosts_toml(
    tmp_path, mirror_factory
) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_text(pem)
    ups = [
        upstream("docker.io", "https://registry-1.docker.io", "https://docker.mirror.example", "docker-hub"),
        upstream("quay.io", "https://quay.io", "https://quay.mirror.example"),
    ]
    params = make_params(upstreams=ups, mirror_ca_file=str(tmp_path / "ca.pem"), probe_mirror_at_boot=False)
    root = tmp_path / "n"
    run_script(script_for(params), root)
    assert (root / "etc/containerd/eks-mirror/ca.crt").read_text() == pem
    for registry in ("docker.io", "quay.io"):
        hosts = root / "etc/containerd/certs.d" / registry / "hosts.toml"
        ca = tomllib.loads(hosts.read_text())["host"][f"https://{registry.split('.')[0]}.mirror.example"][
            "ca"
        ]
        # containerd joins a relative ca path with the hosts.toml's folder
        assert (hosts.parent / ca).resolve() == (root / "etc/containerd/eks-mirror/ca.crt").resolve()


def test_al2_adds_config_path_to_an_old_ami_once(tmp_path) -> None:
    ups = [
        upstream(
            "docker.io", "https://registry-1.docker.io", f"http://127.0.0.1:{closed_port()}", "docker-hub"
        )
    ]
    script = script_for(make_params(upstreams=ups, ami_family="AL2", probe_mirror_at_boot=False))
    root = tmp_path / "n"
    source = root / userdata.EKS_AL2_CONTAINERD_CONFIG
    source.parent.mkdir(parents=True)
    old_ami = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = "runc"\n'
    )
    source.write_text(old_ami)
    run_script(script, root)
    once = source.read_text()
    assert once.startswith(old_ami)
    registry = tomllib.loads(once)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry == {"config_path": "/etc/containerd/certs.d"}
    run_script(script, root)
    assert source.read_text() == once


@pytest.mark.parametrize(
    "config",
    [
        # what AMIs from v20221222 ship: left exactly as it is
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = '
        '"/etc/containerd/certs.d:/etc/docker/certs.d"\n',
        # a registry table without config_path (legacy mirrors): never touched, config_path beside mirrors
        # unloads CRI
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = '
        '["https://m"]\n',
    ],
)
def test_al2_leaves_a_config_with_config_path_or_a_registry_table_alone(tmp_path, config) -> None:
    ups = [upstream("docker.io", "https://registry-1.docker.io", "http://127.0.0.1:9", "docker-hub")]
    root = tmp_path / "n"
    source = root / userdata.EKS_AL2_CONTAINERD_CONFIG
    source.parent.mkdir(parents=True)
    source.write_text(config)
    run_script(script_for(make_params(upstreams=ups, ami_family="AL2", probe_mirror_at_boot=False)), root)
    assert source.read_text() == config


def test_al2023_script_never_touches_containerd_config(tmp_path) -> None:
    script = script_for(make_params(ami_family="AL2023"))
    assert "containerd-config.toml" not in script and "config.toml" not in script.replace("hosts.toml", "")


def test_script_is_deterministic_and_independent_of_upstream_order() -> None:
    ups = two_upstreams("http://a.example", "http://b.example")
    assert script_for(make_params(upstreams=ups)) == script_for(make_params(upstreams=list(reversed(ups))))


def test_dial_timeout_only_for_containerd_that_knows_it() -> None:
    for version, expected in (("1.7.27", False), ("2.0.7", True), ("2.2.4", True), (None, False)):
        files = stage.render(make_params(containerd_version=version), no_secret).files
        assert all(("dial_timeout" in f.render()) is expected for f in files), version


def test_containerd_below_2_gets_the_empty_host_workaround_only_without_mirrors() -> None:
    """containerd/containerd#10027: every 1.x rejects a hosts.toml without [host] (1.7 included)."""
    from runbook_lib.containerd.hosts import ContainerdVersion, HostsToml

    for version in ("1.6.20", "1.7.2", "1.7.29"):
        bare = HostsToml("docker.io", "https://registry-1.docker.io", [], ContainerdVersion.parse(version))
        assert tomllib.loads(bare.render()) == {"server": "https://registry-1.docker.io", "host": {}}
    assert "host" not in tomllib.loads(
        HostsToml("docker.io", "https://r", [], ContainerdVersion.parse("2.0.0")).render()
    )


# -- credential modes ---------------------------------------------------------------------------------------
def resolver(ref: str, user: str | None = None) -> str:
    return PASSWORD


def forms_of_secret() -> list[str]:
    return [PASSWORD, base64.b64encode(f"docker-pull:{PASSWORD}".encode()).decode()]


@pytest.mark.parametrize("mode", ["anonymous", "secrets-manager"])
def test_no_secret_in_userdata_outside_static_header(mode) -> None:
    extra = {"credentials_secret_id": "prod/nexus/docker-pull"} if mode == "secrets-manager" else {}
    params = make_params(
        credential_mode=mode, security={"mode": "authenticated", "pull_password": "env:X"}, **extra
    )
    user_data = stage.render(params, resolver).new_class_user_data
    assert not any(s in user_data for s in forms_of_secret())
    assert "Authorization" in user_data if mode == "secrets-manager" else "Authorization" not in user_data
    assert credentials.flags(params) == []


def test_static_header_puts_the_credential_in_userdata_and_is_flagged() -> None:
    params = make_params(
        credential_mode="static-header", security={"mode": "authenticated", "pull_password": "env:X"}
    )
    rendered = stage.render(params, resolver)
    for f in rendered.files:
        header = tomllib.loads(f.render())["host"][f.mirrors[0].normalized()[0]]["header"]
        assert header == {"Authorization": "Basic " + forms_of_secret()[1]}  # canonical case
    assert forms_of_secret()[1] in rendered.new_class_user_data
    assert any("static-header" in flag for flag in credentials.flags(params))


def test_hosts_toml_with_a_credential_is_written_0600_and_without_one_0644(tmp_path, mirror_factory) -> None:
    """static-header: the Authorization header is in the file, so only root (containerd) may read it; an
    anonymous file stays world-readable. Both runs of the script keep the modes (a rerun replaces files)."""
    m = mirror_factory(401)
    ups = [upstream("docker.io", "https://registry-1.docker.io", url(m), "docker-hub")]
    auth = {"mode": "authenticated", "pull_password": "env:X"}
    cases = {
        "static-header": make_params(upstreams=ups, credential_mode="static-header", security=auth),
        "anonymous": make_params(upstreams=ups),
    }
    for mode, params in cases.items():
        root = tmp_path / mode
        for _ in range(2):
            assert run_script(script_for(params, resolver), root).returncode == 0
        hosts = root / "etc/containerd/certs.d/docker.io/hosts.toml"
        has_header = "header" in tomllib.loads(hosts.read_text())["host"][url(m)]
        assert has_header is (mode == "static-header")
        assert oct(hosts.stat().st_mode & 0o777) == ("0o600" if has_header else "0o644"), mode
        leftovers = [p.name for p in hosts.parent.iterdir() if p.name != "hosts.toml"]
        assert leftovers == []  # no temp file with the credential left behind


def test_file_mode_follows_the_authorization_header() -> None:
    from runbook_lib.containerd.hosts import HostsToml, MirrorHost

    plain = HostsToml("docker.io", "https://r", [MirrorHost("https://m")])
    header = HostsToml("docker.io", "https://r", [MirrorHost("https://m", headers={"authorization": "x"})])
    assert userdata.file_mode(plain, False) == "0644"
    assert userdata.file_mode(header, False) == "0600"
    assert userdata.file_mode(plain, True) == "0600"  # secrets-manager: filled in at boot
    script = script_for(
        make_params(
            credential_mode="secrets-manager",
            credentials_secret_id="prod/nexus/docker-pull",
            security={"mode": "authenticated", "pull_password": "env:X"},
        )
    )
    assert 'install_file "$1" 0600' in script and 'install_file "$1" 0644' not in script


def test_secrets_manager_mode_fills_the_header_at_boot(tmp_path, mirror_factory) -> None:
    aws = shutil.which("aws")
    if not aws:
        pytest.skip("the AWS CLI is not installed here (EKS AMIs ship it)")
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{moto._server.server_port}"
        sm = boto3.client(
            "secretsmanager",
            region_name="eu-west-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        sm.create_secret(Name="prod/nexus/docker-pull", SecretString=f"docker-pull:{PASSWORD}")
        m = mirror_factory(401)
        params = make_params(
            upstreams=[upstream("docker.io", "https://registry-1.docker.io", url(m), "docker-hub")],
            credential_mode="secrets-manager",
            credentials_secret_id="prod/nexus/docker-pull",
            security={"mode": "authenticated", "pull_password": "env:X"},
        )
        params.aws.region = "eu-west-1"
        script = script_for(params, resolver)
        assert PASSWORD not in script
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        root = tmp_path / "n"
        for _ in range(2):
            result = run_script(script, root, env, [os.path.dirname(aws)])
            assert result.returncode == 0 and PASSWORD not in result.stderr
        hosts = root / "etc/containerd/certs.d/docker.io/hosts.toml"
        text = hosts.read_text()
        assert validate(text) == []
        assert oct(hosts.stat().st_mode & 0o777) == "0o600"  # the credential is root's only
        assert tomllib.loads(text)["host"][url(m)]["header"] == {
            "Authorization": "Basic " + forms_of_secret()[1]
        }

        # secret gone (or no permission): nothing is configured, the node pulls from the upstreams
        sm.delete_secret(SecretId="prod/nexus/docker-pull", ForceDeleteWithoutRecovery=True)
        result = run_script(script, tmp_path / "n2", env, [os.path.dirname(aws)])
        assert result.returncode == 0 and not (tmp_path / "n2").exists()
        assert "could not read secret prod/nexus/docker-pull" in result.stderr
    finally:
        moto.stop()


# -- MIME ---------------------------------------------------------------------------------------------------
SCRIPT = "#!/bin/bash\n" + userdata.BEGIN + "\necho ours\n" + userdata.END + "\n"


def email_parts(text: str) -> list[tuple[str, str]]:
    msg = email.message_from_string(text)
    assert msg.is_multipart() and msg.get_content_type() == "multipart/mixed"
    return [(p.get_content_type(), p.get_payload()) for p in msg.get_payload()]


def test_new_document_is_correct_mime() -> None:
    text = userdata.merge(None, SCRIPT, "AL2023")
    assert text.startswith(
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BOUNDARY"\n\n--BOUNDARY\n'
    )
    assert text.endswith("\n--BOUNDARY--\n")
    assert email_parts(text) == [("text/x-shellscript", SCRIPT)]
    assert mime.parse(text).parts[0].headers[userdata.MARKER_HEADER.lower()] == userdata.MARKER_VALUE


USER_MIME = (
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="==USER=="\r\n\r\n'
    "preamble text\r\n"
    "--==USER==\r\n"
    "Content-Type: application/node.eks.aws\r\n\r\n"
    "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: "
    "42\n\r\n"
    "--==USER==\r\n"
    'Content-Type: text/x-shellscript; charset="us-ascii"\r\n\r\n'
    "#!/bin/bash\necho user-script\n\r\n"
    "--==USER==--\r\n"
)


def test_merge_keeps_the_users_mime_parts_byte_for_byte_and_is_idempotent() -> None:
    merged = userdata.merge(USER_MIME, SCRIPT, "AL2023")
    doc = mime.parse(merged)
    original = mime.parse(USER_MIME)
    assert [p.chunk for p in doc.parts[1:]] == [p.chunk for p in original.parts]  # untouched, CRLFs included
    assert doc.head == original.head and doc.preamble == original.preamble and doc.closing == original.closing
    assert [p.content_type for p in doc.parts] == [
        "text/x-shellscript",
        "application/node.eks.aws",
        "text/x-shellscript",
    ]
    assert userdata.merge(merged, SCRIPT, "AL2023") == merged
    assert userdata.remove(merged) == USER_MIME
    # a Go-like reader sees three parts, ours first, the NodeConfig unchanged
    parts = email_parts(merged)
    assert parts[0] == ("text/x-shellscript", SCRIPT)
    assert parts[1][0] == "application/node.eks.aws" and "maxPods: 42" in parts[1][1]


def test_rerun_replaces_our_previous_part_in_place() -> None:
    merged = userdata.merge(USER_MIME, SCRIPT, "AL2023")
    newer = SCRIPT.replace("echo ours", "echo ours v2")
    again = userdata.merge(merged, newer, "AL2023")
    assert userdata.managed_script(again) == newer
    assert again.count(userdata.BEGIN) == 1
    assert userdata.remove(again) == USER_MIME


@pytest.mark.parametrize(
    ("family", "bare", "content_type"),
    [
        ("AL2", "#!/bin/bash\necho hello\n", "text/x-shellscript"),
        ("AL2023", "#!/bin/bash\necho hello\n", "text/x-shellscript"),
        (
            "AL2023",
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: {}\n",
            "application/node.eks.aws",
        ),
        (
            "AL2",
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n",
            "text/x-shellscript",
        ),  # AL2: always a script
    ],
)
def test_bare_user_data_is_wrapped_unchanged_as_karpenter_would(family, bare, content_type) -> None:
    merged = userdata.merge(bare, SCRIPT, family)
    parts = userdata.parts(merged)
    assert [(p["content_type"], p["body"], p["ours"]) for p in parts] == [
        ("text/x-shellscript", SCRIPT, True),
        (content_type, bare, False),
    ]
    assert userdata.merge(merged, SCRIPT, family) == merged
    assert userdata.shell_scripts(merged)[0] == SCRIPT


def test_unclosed_user_document_stays_as_written() -> None:
    unclosed = (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="//"\n\n--//\n'
        'Content-Type: text/x-shellscript; charset="us-ascii"\n\necho user\n--//'
    )
    merged = userdata.merge(unclosed, SCRIPT, "AL2023")
    assert merged.endswith("echo user\n--//")
    assert [p["body"] for p in userdata.parts(merged)][0] == SCRIPT


def test_two_runbook_parts_are_refused() -> None:
    merged = userdata.merge(None, SCRIPT, "AL2")
    doc = mime.parse(merged)
    doc.parts.append(doc.parts[0])
    with pytest.raises(userdata.UserDataError, match="more than one"):
        userdata.merge(doc.render(), SCRIPT, "AL2")


def test_generated_script_survives_the_mime_round_trip_and_is_ascii() -> None:
    script = script_for(make_params(ami_family="AL2023"))
    merged = userdata.merge(None, script, "AL2023")
    assert merged.isascii()
    assert userdata.managed_script(merged) == script
    assert not any(line.startswith("--") for line in script.splitlines())


def test_size_limit_is_enforced() -> None:
    ups = [
        upstream(f"r{i}.example.com", f"https://r{i}.example.com", f"https://mirror-{i}.example.com")
        for i in range(40)
    ]
    big = stage.render(make_params(upstreams=ups), no_secret).new_class_user_data
    report = userdata.size_report(big)
    assert not report["ok"] and report["limit"] == 16384
    with pytest.raises(userdata.UserDataError, match="too large"):
        userdata.check_size(big)
    small = stage.render(make_params(), no_secret).new_class_user_data
    assert userdata.check_size(small)["ok"]
