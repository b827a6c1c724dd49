"""Bottlerocket userData: settings.container-registry in the one form the version supports, merged into the
user's TOML without rewriting it."""

from __future__ import annotations

import base64
import tomllib

import pytest

from runbook_lib.karpenter import bottlerocket
from runbook_lib.karpenter import nodes as stage
from runbook_lib.karpenter.mirrors import NodeMirror
from tests.support.karpenter import make_params

MIRRORS = [
    NodeMirror("docker.io", "https://registry-1.docker.io", "https://docker.mirror.example.com"),
    NodeMirror("quay.io", "https://quay.io", "https://quay.mirror.example.com:8443"),
]


def forms(text: str) -> set[str]:
    """Which mirror forms a document uses, read from its table header lines."""
    lines = {line.strip() for line in text.splitlines()}
    return {
        "array" if "[[settings.container-registry.mirrors]]" in lines else "",
        "table" if "[settings.container-registry.mirrors]" in lines else "",
    } - {""}


@pytest.mark.parametrize(
    ("version", "form"),
    [("1.2.0", "table"), ("1.3.9", "table"), ("1.4.0", "array"), ("1.20.4", "array"), (None, "array")],
)
def test_one_mirror_form_per_version(version, form) -> None:
    block = bottlerocket.settings_block(MIRRORS, None, version)
    assert forms(block) == {form}
    mirrors = tomllib.loads(block)["settings"]["container-registry"]["mirrors"]
    if form == "array":
        assert mirrors == [
            {"registry": "docker.io", "endpoint": ["https://docker.mirror.example.com"]},
            {"registry": "quay.io", "endpoint": ["https://quay.mirror.example.com:8443"]},
        ]
    else:
        assert mirrors == {
            "docker.io": ["https://docker.mirror.example.com"],
            "quay.io": ["https://quay.mirror.example.com:8443"],
        }


def test_too_old_for_mirrors_or_credentials() -> None:
    with pytest.raises(bottlerocket.BottlerocketError, match="v1.2.0"):
        bottlerocket.settings_block(MIRRORS, None, "1.1.4")
    with pytest.raises(bottlerocket.BottlerocketError, match="v1.6.2"):
        bottlerocket.settings_block(MIRRORS, "dXNlcjpwYXNz", "1.6.1")


def test_credentials_are_keyed_by_the_mirror_host() -> None:
    block = bottlerocket.settings_block(MIRRORS, "dXNlcjpwYXNz", "1.20.0")
    creds = tomllib.loads(block)["settings"]["container-registry"]["credentials"]
    assert creds == [
        {"registry": "docker.mirror.example.com", "auth": "dXNlcjpwYXNz"},
        {"registry": "quay.mirror.example.com:8443", "auth": "dXNlcjpwYXNz"},
    ]


def test_static_header_mode_renders_bottlerocket_auth_anonymous_none() -> None:
    sec = {"mode": "authenticated", "pull_password": "env:X"}
    static = stage.render(
        make_params(ami_family="Bottlerocket", credential_mode="static-header", security=sec),
        lambda ref, user=None: "pw-1234",
    ).generated.payload
    auth = base64.b64encode(b"docker-pull:pw-1234").decode()
    assert all(
        c["auth"] == auth for c in tomllib.loads(static)["settings"]["container-registry"]["credentials"]
    )
    anonymous = stage.render(
        make_params(ami_family="Bottlerocket"), lambda ref, user=None: "x"
    ).generated.payload
    assert "credentials" not in tomllib.loads(anonymous)["settings"]["container-registry"]


USER_TOML = """\
# my Bottlerocket settings
[settings.kubernetes]
max-pods = 58   # keep this comment

[settings.container-registry]
# credentials for my private registry
[[settings.container-registry.credentials]]
registry = "registry.internal:5000"
username = "me"
password = "pw"

[[settings.container-registry.mirrors]]
registry = "registry.internal:5000"
endpoint = ["https://cache.internal"]
"""


def test_merge_keeps_user_text_and_is_idempotent() -> None:
    block = bottlerocket.settings_block(MIRRORS, None, "1.20.0")
    merged = bottlerocket.merge(USER_TOML, block)
    assert merged.startswith(USER_TOML)  # comments and layout untouched
    assert forms(merged) == {"array"}
    doc = tomllib.loads(merged)
    assert [m["registry"] for m in doc["settings"]["container-registry"]["mirrors"]] == [
        "registry.internal:5000",
        "docker.io",
        "quay.io",
    ]
    assert doc["settings"]["kubernetes"] == {"max-pods": 58}
    assert bottlerocket.merge(merged, block) == merged
    newer = bottlerocket.settings_block(MIRRORS[:1], None, "1.20.0")
    replaced = bottlerocket.merge(merged, newer)
    assert replaced.count(bottlerocket.BEGIN) == 1 and "quay.io" not in replaced
    assert bottlerocket.strip_block(replaced) == USER_TOML


def test_merge_into_empty_user_data_is_just_our_block() -> None:
    block = bottlerocket.settings_block(MIRRORS, None, None)
    assert bottlerocket.merge(None, block) == block
    assert bottlerocket.managed_block(bottlerocket.merge("", block)) == block


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ('[settings.container-registry.mirrors]\n"ghcr.io" = ["https://x"]\n', "other form"),
        (
            '[[settings.container-registry.mirrors]]\nregistry = "docker.io"\nendpoint = ["https://x"]\n',
            "docker.io",
        ),
        ("[settings\n", "not valid TOML"),
    ],
)
def test_merge_refuses_conflicts(user, message) -> None:
    with pytest.raises(bottlerocket.BottlerocketError, match=message):
        bottlerocket.merge(user, bottlerocket.settings_block(MIRRORS, None, "1.20.0"))


def test_table_form_conflicts_with_a_user_table() -> None:
    block = bottlerocket.settings_block(MIRRORS, None, "1.3.0")
    with pytest.raises(bottlerocket.BottlerocketError, match="already has"):
        bottlerocket.merge('[settings.container-registry.mirrors]\n"ghcr.io" = ["https://x"]\n', block)
