"""Image references checked with the distribution reference grammar.

The grammar is the one documented in github.com/distribution/reference, regexp.go (and reference.go's
grammar comment): name components are lowercase alphanumerics joined by '.', '_', '__' or runs of '-';
an optional domain (host with optional port, or a bracketed IPv6 address) comes first; tags are
[\\w][\\w.-]{0,127}; digests are algorithm:hex (32+ hex digits); a name is at most 255 characters.
Written from that description; no code copied.
"""

from __future__ import annotations

import re

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$", re.ASCII)
NAME_TOTAL_LENGTH_MAX = 255


def check(ref: str) -> str:
    """Return the reference's domain; raise ValueError saying what is wrong (without echoing it)."""
    if not ref.isascii() or not ref.isprintable() or " " in ref:
        raise ValueError("image reference must be printable ASCII without spaces")
    m = _REFERENCE.match(ref)
    if not m:
        if ref.lower() != ref and _REFERENCE.match(ref.lower()):
            raise ValueError("image repository names must be lowercase")
        raise ValueError(
            "not an image reference (distribution grammar: [domain[:port]/]path[:tag][@algo:hex])"
        )
    if len(m.group("name")) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"image name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    domain = m.group("domain")
    first = m.group("path").split("/", 1)[0] if domain is None else domain
    # like the normalised form: a first component without '.' or ':' (and not localhost) is a path
    if domain is None or ("." not in domain and ":" not in domain and domain != "localhost"):
        raise ValueError(
            "image reference must be fully qualified with its registry (e.g. docker.io/library/nginx:1.27)"
        )
    return first
