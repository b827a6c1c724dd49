"""Bottlerocket node userData: ``settings.container-registry`` TOML, merged into the user's settings.

Bottlerocket runs no boot script we could use (bootstrap containers cannot write under /etc, bottlerocket
issue #4437), so mirrors are settings (aws/karpenter-provider-aws bootstrap/bottlerocket.go; Karpenter docs
concepts/nodeclasses.md "Bottlerocket"):
- ``settings.container-registry.mirrors``: the **table form** (``"docker.io" = [url]``) exists from v1.2.0;
  the **array-of-tables form** (``[[...mirrors]]`` with ``registry`` and ``endpoint``) is the documented one
  from v1.4.0. Both stay valid from v1.4.0, but mixing them in one document is invalid TOML, so exactly one
  form is written: table form before v1.4.0, array form from v1.4.0 (and when the version is unknown);
- ``settings.container-registry.credentials`` (from v1.6.2) are keyed by the **mirror host**, because
  containerd looks credentials up by the host it contacts;
- Bottlerocket still tries the upstream when a mirror fails (no "mirror only" setting). The settings do
  not depend on the mirror answering at boot, so a node that boots while Nexus is down uses the mirror once
  it is back. We write no ``dial_timeout`` here (no such container-registry setting is used): a black-holed
  mirror costs containerd's 30 s dial per request (bottlerocket-os/bottlerocket#4564).
Karpenter keeps every ``settings`` subtree other than ``settings.kubernetes`` as given.

Merge: our block sits between marker comments at the end of the user's TOML. On rerun the old block is cut
out and the new one appended, so the user's text — comments and layout included — is never rewritten.
The result must parse; a user mirror entry for a registry we manage, or the other mirror form, is refused
with an explanation instead of producing a document Bottlerocket would reject.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import tomli_w

from runbook_lib.karpenter.mirrors import NodeMirror
from runbook_lib.versions import numeric_release

BEGIN = "# >>> eks-mirror-runbook: container registry mirrors (managed block, replaced on every apply) >>>"
END = "# <<< eks-mirror-runbook <<<"
_BLOCK = re.compile(rf"\n?{re.escape(BEGIN)}\n.*?{re.escape(END)}\n?", re.S)


class BottlerocketError(ValueError):
    pass


def _release(version: str | None) -> tuple[int, ...]:
    return numeric_release(version) if version else (99,)  # not given: the newest Bottlerocket


def mirror_form(version: str | None) -> str:
    """'table' before v1.4.0, 'array' from v1.4.0 (also when the version is not given)."""
    release = _release(version)
    if release < (1, 2):
        raise BottlerocketError("Bottlerocket has container-registry mirrors only from v1.2.0")
    return "table" if release < (1, 4) else "array"


def _value(v: Any) -> str:
    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


def settings_block(mirrors: list[NodeMirror], auth: str | None, version: str | None) -> str:
    """Our TOML block. Written line by line (not one tomli_w document) so that it never opens a parent table
    such as ``[settings.container-registry]`` that the user's text may already define."""
    form = mirror_form(version)
    lines = [BEGIN]
    if form == "array":
        for m in mirrors:
            lines += [
                "[[settings.container-registry.mirrors]]",
                f"registry = {_value(m.registry)}",
                f"endpoint = [{_value(m.mirror_url)}]",
                "",
            ]
    else:
        lines.append("[settings.container-registry.mirrors]")
        lines += [f"{_value(m.registry)} = [{_value(m.mirror_url)}]" for m in mirrors]
        lines.append("")
    if auth:
        if _release(version) < (1, 6, 2):
            raise BottlerocketError("Bottlerocket has container-registry credentials only from v1.6.2")
        for host in sorted({m.host for m in mirrors}):
            lines += [
                "[[settings.container-registry.credentials]]",
                f"registry = {_value(host)}",
                f"auth = {_value(auth)}",
                "",
            ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def strip_block(text: str | None) -> str:
    return _BLOCK.sub("", text, count=1) if text and BEGIN in text else (text or "")


def _ours(block: str) -> dict[str, Any]:
    return tomllib.loads(block).get("settings", {}).get("container-registry", {})


def merge(existing: str | None, block: str) -> str:
    """The user's TOML with our block replaced (or appended). Raises BottlerocketError on a conflict."""
    user = strip_block(existing)
    try:
        theirs = tomllib.loads(user).get("settings", {}).get("container-registry", {})
    except tomllib.TOMLDecodeError as err:
        raise BottlerocketError(f"the node class userData is not valid TOML: {err}") from None
    ours = _ours(block)
    their_mirrors = theirs.get("mirrors")
    our_mirrors = ours.get("mirrors")
    if their_mirrors is not None and type(their_mirrors) is not type(our_mirrors):
        raise BottlerocketError(
            "the userData already lists container-registry mirrors in the other form "
            "(table vs array of tables); one document must use one form only"
        )
    if isinstance(their_mirrors, dict):
        raise BottlerocketError(
            "the userData already has a [settings.container-registry.mirrors] table; move "
            "its entries into the runbook's upstreams or remove them"
        )
    managed = (
        {m["registry"] for m in our_mirrors} if isinstance(our_mirrors, list) else set(our_mirrors or {})
    )
    clash = sorted(managed & {m.get("registry") for m in their_mirrors or []})
    if clash:
        raise BottlerocketError(
            f"the userData already has mirrors for {clash}; remove them (the runbook manages "
            "these registries)"
        )
    cred_clash = sorted(
        {c["registry"] for c in ours.get("credentials", [])}
        & {c.get("registry") for c in theirs.get("credentials", []) or []}
    )
    if cred_clash:
        raise BottlerocketError(f"the userData already has credentials for {cred_clash}; remove them")
    # one blank line between the user's text and ours; strip_block removes exactly that again
    merged = user + ("" if user.endswith("\n") else "\n") + "\n" + block if user.strip() else block
    try:
        tomllib.loads(merged)
    except tomllib.TOMLDecodeError as err:
        raise BottlerocketError(f"our block does not combine with the userData's TOML: {err}") from None
    return merged


def managed_block(text: str | None) -> str | None:
    m = _BLOCK.search(text or "")
    return m.group(0).strip("\n") + "\n" if m else None
