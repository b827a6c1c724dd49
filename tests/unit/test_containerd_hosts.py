"""hosts.toml rendering, parsed back with a TOML library."""

from __future__ import annotations

import pytest

from runbook_lib.containerd.hosts import (
    ContainerdVersion,
    HostsToml,
    MirrorHost,
    basic_header,
    parse,
    validate,
)


def test_docker_hub_mirror_parses_back() -> None:
    f = HostsToml(
        "docker.io",
        "https://registry-1.docker.io",
        [MirrorHost("https://docker.mirror.example.com")],
        ContainerdVersion.parse("1.7.27"),
    )
    doc = parse(f.render())
    assert doc == {
        "server": "https://registry-1.docker.io",
        "host": {"https://docker.mirror.example.com": {"capabilities": ["pull", "resolve"]}},
    }
    assert str(f.relative_path) == "docker.io/hosts.toml"
    assert validate(f.render()) == []


def test_rendering_twice_is_identical_and_never_duplicates() -> None:
    f = HostsToml("gcr.io", "https://gcr.io", [MirrorHost("http://127.0.0.1:18083")])
    assert f.render() == f.render()
    assert f.render().count("[host.") == 1


def test_path_style_endpoint_gets_v2_and_override_path() -> None:
    f = HostsToml("quay.io", "https://quay.io", [MirrorHost("https://nexus.example.com/repository/quay-io")])
    host = parse(f.render())["host"]
    assert host == {
        "https://nexus.example.com/repository/quay-io/v2": {
            "capabilities": ["pull", "resolve"],
            "override_path": True,
        }
    }


@pytest.mark.parametrize(
    ("version", "emitted"),
    [
        ("1.6.20", False),
        ("1.7.27", False),
        ("2.0.6", False),
        ("2.0.7", True),
        ("2.1.0", True),
        ("v2.2.1", True),
    ],
)
def test_dial_timeout_only_where_supported(version, emitted) -> None:
    f = HostsToml(
        "ghcr.io",
        "https://ghcr.io",
        [MirrorHost("https://m", dial_timeout="2s")],
        ContainerdVersion.parse(version),
    )
    assert ("dial_timeout" in parse(f.render())["host"]["https://m"]) is emitted


def test_containerd_below_2_gets_an_empty_host_table() -> None:
    """Every containerd below 2.0 rejects a file without [host] (containerd/containerd#10027, seen on 1.6 and
    1.7); 2.0's TOML library reads it. Unknown keeps the table: harmless on 2.x."""
    for version in (None, "1.6.20~ds1", "1.7.0", "1.7.29"):
        f = HostsToml(
            "docker.io",
            "https://registry-1.docker.io",
            [],
            ContainerdVersion.parse(version) if version else None,
        )
        assert parse(f.render())["host"] == {}, version
    for version in ("2.0.0", "2.2.4"):
        newer = HostsToml("docker.io", "https://registry-1.docker.io", [], ContainerdVersion.parse(version))
        assert "host" not in parse(newer.render()), version
    assert [
        v
        for v in ("1.6.6", "1.7.27", "1.7.99", "2.0.0")
        if ContainerdVersion.parse(v).needs_empty_host_table()
    ] == [
        "1.6.6",
        "1.7.27",
        "1.7.99",
    ]


def test_authorization_header_canonical_case() -> None:
    header = basic_header("docker-pull", "pw")
    f = HostsToml(
        "docker.io",
        "https://registry-1.docker.io",
        [MirrorHost("https://m", headers={"Authorization": header}, ca=["/etc/ssl/mirror-ca.pem"])],
    )
    table = parse(f.render())["host"]["https://m"]
    assert table["header"] == {"Authorization": "Basic ZG9ja2VyLXB1bGw6cHc="}
    assert table["ca"] == "/etc/ssl/mirror-ca.pem"


def test_validate_finds_what_containerd_would_ignore() -> None:
    good = HostsToml("docker.io", "https://registry-1.docker.io", [MirrorHost("https://m")]).render()
    assert any("not valid TOML" in p for p in validate(good + good))  # the seed's `tee -a` twice
    assert any(
        "resolve" in p
        for p in validate('server = "https://x"\n[host."https://m"]\ncapabilities = ["pull"]\n')
    )
    assert any("[host]" in p for p in validate('server = "https://x"\n'))
    assert any(
        "Authorization" in p
        for p in validate(
            'server = "https://x"\n[host."https://m"]\ncapabilities = ["pull", '
            '"resolve"]\n[host."https://m".header]\nauthorization = "x"\n'
        )
    )
    assert any(
        "override_path" in p
        for p in validate(
            'server = "https://x"\n[host."https://m/repo"]\ncapabilities = ["pull", '
            '"resolve"]\noverride_path = true\n'
        )
    )


def test_dial_timeout_kept_when_the_version_is_left_to_the_node() -> None:
    """No version (the userData's files): the key is kept; the boot script drops it on a node whose own
    `containerd --version` is below 2.0.7 (test_karpenter_userdata.py), older ones ignore it anyway."""
    f = HostsToml("ghcr.io", "https://ghcr.io", [MirrorHost("https://m", dial_timeout="2s")])
    assert parse(f.render())["host"]["https://m"]["dial_timeout"] == "2s"
