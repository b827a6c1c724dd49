"""AL2/AL2023 userData: the boot script run for real (bash, coreutils, curl) below a sandbox root, and the
MIME merge that keeps the user's parts byte for byte.

The script runs unprivileged through its root override (EKS_MIRROR_ROOT). "Mirrors" for the boot probe are
tiny loopback HTTP servers answering /v2/ with a chosen status; the node's containerd is a fake `containerd`
on PATH printing a chosen `--version` line (the script decides dial_timeout from it). The real-containerd
pulls are in test_karpenter_node_containerd.py and test_node_boot_mirror_down.py.
"""

from __future__ import annotations

import base64
import email
import os
import re
import shlex
import shutil
import subprocess
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


def fake_containerd(folder, version_line: str | None, status: int = 0) -> str:
    """A folder holding a `containerd` that prints `version_line` for --version (exit `status`); put it first
    on PATH so the script sees it instead of this machine's containerd."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "containerd"
    echo = f"printf '%s\\n' {shlex.quote(version_line)}\n" if version_line is not None else ""
    binary.write_text(f"#!/bin/sh\n{echo}exit {status}\n")
    binary.chmod(0o755)
    return str(folder)


def on_node(script: str, root, node_bin: str) -> subprocess.CompletedProcess[str]:
    """run_script with `node_bin` (a fake containerd) first on PATH: run_script puts curl's folder, which
    holds this machine's containerd, before its extra_path."""
    return run_script(script, root, {"PATH": f"{node_bin}:/usr/bin:/bin"})


# what `containerd --version` prints on the nodes that matter (EKS AL2: 1.7; AL2023: 2.x; Debian: 1.6)
CTD_17 = "containerd github.com/containerd/containerd 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da"


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
    node = fake_containerd(tmp_path / "bin", CTD_17)
    first = on_node(script, root, node)
    assert first.returncode == 0, first.stderr
    files = tree(root)
    assert set(files) == {
        "etc/containerd/certs.d/docker.io/hosts.toml",
        "etc/containerd/certs.d/quay.io/hosts.toml",
    }
    second = on_node(script, root, node)
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


def test_every_file_is_written_whatever_the_mirror_answers_and_the_probe_only_logs(
    tmp_path, mirror_factory
) -> None:
    """Issue #12: a mirror that is down at boot (refused, or not a registry) still gets its hosts.toml, so
    the node uses it once it is back; the probe only says so in the log. containerd falls back to the
    upstream per request meanwhile (test_node_boot_mirror_down.py shows it with the real daemon)."""
    up, not_registry = mirror_factory(401), mirror_factory(404)
    down = f"http://127.0.0.1:{closed_port()}"
    ups = [
        upstream("docker.io", "https://registry-1.docker.io", url(up), "docker-hub"),
        upstream("quay.io", "https://quay.io", down),
        upstream("ghcr.io", "https://ghcr.io", url(not_registry)),
    ]
    node = fake_containerd(tmp_path / "bin", CTD_17)
    result = on_node(script_for(make_params(upstreams=ups, probe_timeout_s=2)), tmp_path / "n", node)
    assert result.returncode == 0  # a mirror problem never fails the node's boot
    files = tree(tmp_path / "n")
    assert set(files) == {
        f"etc/containerd/certs.d/{r}/hosts.toml" for r in ("docker.io", "quay.io", "ghcr.io")
    }
    quay = tomllib.loads(files["etc/containerd/certs.d/quay.io/hosts.toml"].decode())
    assert quay == {"server": "https://quay.io", "host": {down: {"capabilities": ["pull", "resolve"]}}}
    assert f"no registry answer from {down}/v2/ (HTTP 000" in result.stderr
    assert f"no registry answer from {url(not_registry)}/v2/ (HTTP 404" in result.stderr
    assert f"from {url(up)}" not in result.stderr  # a 401 is a registry asking for a token: up
    assert "hosts.toml written anyway" in result.stderr
    assert "3 of 3 hosts.toml" in result.stderr
    assert up.hits == ["/v2/"] and not_registry.hits == ["/v2/"]


def test_probe_off_writes_every_file_even_with_the_mirror_down(tmp_path) -> None:
    ups = [
        upstream(
            "docker.io", "https://registry-1.docker.io", f"http://127.0.0.1:{closed_port()}", "docker-hub"
        )
    ]
    script = script_for(make_params(upstreams=ups, probe_mirror_at_boot=False))
    assert "curl" not in script and "wait" not in script
    result = run_script(script, tmp_path / "n")
    assert set(tree(tmp_path / "n")) == {"etc/containerd/certs.d/docker.io/hosts.toml"}
    assert "no registry answer" not in result.stderr and "1 of 1 hosts.toml" in result.stderr


def test_path_style_endpoint_gets_v2_and_override_path_and_is_probed_there(tmp_path, mirror_factory) -> None:
    m = mirror_factory(200)
    ups = [
        upstream(
            "docker.io", "https://registry-1.docker.io", f"{url(m)}/repository/docker-group", "docker-hub"
        )
    ]
    on_node(script_for(make_params(upstreams=ups)), tmp_path / "n", fake_containerd(tmp_path / "b", CTD_17))
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


def test_rendered_files_carry_dial_timeout_whatever_the_parameter_says() -> None:
    """The decision moved to the node: karpenter.containerd_version no longer drops the key from userData
    (AL2023 AMIs ship containerd 2.x whatever the parameter says); karpenter.dial_timeout is the value."""
    for version in ("1.7.27", "2.0.7", None):
        rendered = stage.render(make_params(containerd_version=version, dial_timeout="3s"), no_secret)
        for f in rendered.files:
            assert userdata.dial_line("3s") in f.render().splitlines(), version
        assert "dial_line='dial_timeout = \"3s\"'" in rendered.generated.payload


# `containerd --version` lines as the packages print them, and whether that containerd reads dial_timeout
VERSION_LINES = [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", False),  # Debian 12
    (CTD_17, False),  # EKS AL2
    ("containerd containerd.io 1.7.28 b98a3aace656320842a23f4a392a33f46af97866", False),  # Docker's package
    ("containerd github.com/containerd/containerd 1.10.0 abc", False),  # numeric, not lexical: 1.10 < 2
    ("containerd github.com/containerd/containerd/v2 v2.0.0 207ad711eabd375a01713109a8a197d197ff6542", False),
    ("containerd github.com/containerd/containerd/v2 v2.0.6 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20", False),
    ("containerd github.com/containerd/containerd/v2 v2.0.7 0b8ba8cba80c6a7ce6e7d5f1ec7d2a7d8d8d2c1e", True),
    ("containerd github.com/containerd/containerd/v2 v2.0.10 0b8ba8c", True),  # 10 > 7
    (
        "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
        True,
    ),  # AL2023
    ("containerd github.com/containerd/containerd/v2 2.2.0 1c4457e00facac03ce1d75f7b6777a7a851e5c41", True),
    ("containerd github.com/containerd/containerd/v2 v3.0.0-beta.0 abc", True),
]


@pytest.mark.parametrize(("line", "reads_dial"), VERSION_LINES, ids=[v[0].split()[2] for v in VERSION_LINES])
def test_node_decides_dial_timeout_from_its_containerd_version(tmp_path, line, reads_dial) -> None:
    """Issue #12: the boot script runs `containerd --version` on the node; dial_timeout is written into every
    [host] table where that containerd reads it (>= 2.0.7), and dropped below. Everything else in the file
    is the same either way, the header table of a credential included."""
    auth = {"mode": "authenticated", "pull_password": "env:X"}
    ups = two_upstreams("http://a.example:5000", "https://nexus.example/repository/quay")
    params = make_params(
        upstreams=ups,
        credential_mode="static-header",
        security=auth,
        dial_timeout="2s",
        probe_mirror_at_boot=False,
    )
    script = script_for(params, resolver)
    root = tmp_path / "n"
    result = on_node(script, root, fake_containerd(tmp_path / "bin", line))
    assert result.returncode == 0, result.stderr
    files = tree(root)
    assert len(files) == 2
    for text in files.values():
        doc = tomllib.loads(text.decode())
        assert validate(text.decode()) == []
        (table,) = doc["host"].values()
        assert ("dial_timeout" in table) is reads_dial, line
        if reads_dial:
            assert table["dial_timeout"] == "2s"
        assert table["header"] == {"Authorization": "Basic " + forms_of_secret()[1]}
        assert table["capabilities"] == ["pull", "resolve"]
    version = re.match(r"v?([0-9]+[.][0-9]+[.][0-9]+)", line.split()[2]).group(1)
    assert f"containerd {version}" in result.stderr
    assert ("not written" in result.stderr) is not reads_dial


@pytest.mark.parametrize(("line", "status"), [(None, 127), ("containerd: command failed", 1), ("garbage", 0)])
def test_unreadable_containerd_version_is_taken_as_2x(tmp_path, line, status) -> None:
    """A version the script cannot read is taken as 2.x (what current AMIs ship): dial_timeout is written,
    and it is harmless where not read (containerd 1.6 ignores the key: test_node_boot_mirror_down.py)."""
    root = tmp_path / "n"
    params = make_params(probe_mirror_at_boot=False)
    result = on_node(script_for(params), root, fake_containerd(tmp_path / "bin", line, status))
    assert result.returncode == 0
    assert "taken as 2.x, dial_timeout 5s written" in result.stderr
    for text in tree(root).values():
        (table,) = tomllib.loads(text.decode())["host"].values()
        assert table["dial_timeout"] == "5s"


def test_the_dial_line_the_node_drops_is_the_one_rendered() -> None:
    """The script drops an exact line: a file whose [host] carries dial_timeout in another rendering, or a
    script without the value, is refused instead of leaving the key on a node that does not read it."""
    from runbook_lib.containerd.hosts import HostsToml, MirrorHost
    from runbook_lib.karpenter.mirrors import NodeMirror

    f = HostsToml("docker.io", "https://r", [MirrorHost("https://m", dial_timeout="5s")])
    m = NodeMirror("docker.io", "https://r", "https://m")
    ok = userdata.ScriptInputs([m], [f], "AL2023", False, 3, dial_timeout="5s")
    assert userdata.dial_line("5s") in userdata.boot_script(ok)
    with pytest.raises(userdata.UserDataError, match="dial_timeout"):
        userdata.boot_script(userdata.ScriptInputs([m], [f], "AL2023", False, 3, dial_timeout="7s"))
    with pytest.raises(userdata.UserDataError, match="dial_timeout"):
        userdata.boot_script(userdata.ScriptInputs([m], [f], "AL2023", False, 3))


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
    assert 'write_hosts "$certs/docker.io/hosts.toml" 0600' in script and " 0644 <<" not in script


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
