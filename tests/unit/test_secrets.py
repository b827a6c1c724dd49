"""Secret references: parsing, resolvers and the redactor's encodings."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from runbook_lib import secrets
from runbook_lib.secrets import Redactor, ResolveContext, SecretError, parse_ref


@pytest.mark.parametrize(
    ("text", "scheme", "target", "key"),
    [
        ("env:NEXUS_PW", "env", "NEXUS_PW", None),
        ("file:../secrets/pw", "file", "../secrets/pw", None),
        ("aws-sm:prod/nexus", "aws-sm", "prod/nexus", None),
        ("aws-sm:prod/nexus#password", "aws-sm", "prod/nexus", "password"),
        ("k8s:nexusrepo/docker-pull#password", "k8s", "nexusrepo/docker-pull", "password"),
    ],
)
def test_parse_valid(text, scheme, target, key) -> None:
    ref = parse_ref(text)
    assert (ref.scheme, ref.target, ref.key) == (scheme, target, key)
    assert str(ref) == text


@pytest.mark.parametrize(
    "text",
    ["hunter2", "env:1BAD", "file:", "aws-sm:", "aws-sm:x#", "k8s:ns/name", "k8s:NS/name#k", "vault:x"],
)
def test_parse_invalid(text) -> None:
    with pytest.raises(ValueError):
        parse_ref(text)


def test_env_and_file_resolvers_register_values(tmp_path, monkeypatch) -> None:
    secrets.REDACTOR.clear()
    monkeypatch.setenv("CANARY_ENV", "env-canary-value")
    (tmp_path / "pw").write_text("file-canary-value\n")
    ctx = ResolveContext(base_dir=tmp_path)
    assert secrets.resolve("env:CANARY_ENV", ctx) == "env-canary-value"
    assert secrets.resolve("file:pw", ctx, user="bob") == "file-canary-value"
    scrubbed = secrets.REDACTOR.scrub(
        "a env-canary-value b " + base64.b64encode(b"bob:file-canary-value").decode()
    )
    assert "canary" not in scrubbed and "Ym9i" not in scrubbed
    secrets.REDACTOR.clear()


def test_missing_env_names_reference_not_value(monkeypatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(SecretError, match="NOPE_NOT_SET is not set"):
        secrets.resolve("env:NOPE_NOT_SET")


def test_redactor_scrubs_every_encoding() -> None:
    r = Redactor()
    value = "s3cr3t/P@ss+word=="
    r.add_pair("docker-pull", value)
    forms = [
        value,
        base64.b64encode(value.encode()).decode(),
        base64.urlsafe_b64encode(value.encode()).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(f"docker-pull:{value}".encode()).decode(),
        json.dumps({"p": value}),
    ]
    for form in forms:
        out = r.scrub(f"before {form} after")
        assert value not in out and form not in out.replace("***", ""), form
        assert out.startswith("before ") and out.endswith(" after")


def test_redactor_ignores_too_short_values() -> None:
    r = Redactor()
    r.add("ab")
    assert r.scrub("abc") == "abc"
    assert not r.active
