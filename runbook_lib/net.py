"""HTTP plumbing shared by every client of the runbook: host overrides like `curl --resolve`.

`resolve:` in the parameters maps host names to addresses (e.g. an ingress host before its DNS record
exists, or the lab's `*.mirror.lab.internal` names). Requests keep their Host header and TLS server
name (SNI, certificate check) for the original name; only the TCP connection goes to the address.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from typing import Any

import httpx


def ssl_context() -> ssl.SSLContext:
    """The process's TLS context for verified connections, built once per CA setting.

    httpx builds a new context for every client and transport, loading the CA bundle each time: ~30-50 ms
    of CPU, paid for each probe, each pull sample and each Nexus session. One context serves them all
    (an SSLContext is safe to share between connections and threads). It is keyed on SSL_CERT_FILE and
    SSL_CERT_DIR, which httpx's own context honours, so changing them still takes effect."""
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


class ResolvingTransport(httpx.HTTPTransport):
    def __init__(self, overrides: Mapping[str, str], **kwargs: Any):
        kwargs.setdefault("verify", ssl_context())
        super().__init__(**kwargs)
        self.overrides = {k.lower(): v for k, v in overrides.items()}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host.lower()
        address = self.overrides.get(host)
        if address:
            # The Host header was fixed when the request was built; keep SNI on the original name too.
            request.extensions = {**request.extensions, "sni_hostname": host}
            request.url = request.url.copy_with(host=address)
        return super().handle_request(request)


def transport(overrides: Mapping[str, str] | None, **kwargs: Any) -> httpx.BaseTransport | None:
    """A transport honouring the overrides, or None (httpx's default) when there are none."""
    return ResolvingTransport(overrides, **kwargs) if overrides else None


def client(overrides: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=transport(overrides), verify=ssl_context(), **kwargs)
