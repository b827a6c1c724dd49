"""Host overrides: the connection goes to the address, the Host header keeps the name."""

from __future__ import annotations

import ssl

import httpx
import pytest

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lib import net
from tests.support.tls import self_signed


class Echo(LabHandler):
    def do_GET(self) -> None:
        self.reply_json(200, {"host": self.headers.get("Host"), "path": self.path})


def test_override_connects_to_address_with_original_host_header() -> None:
    server = LabHTTPServer(("127.0.0.1", 0), Echo)
    serve_in_thread(server)
    port = server.server_address[1]
    try:
        with net.client({"docker.mirror.lab.internal": "127.0.0.1"}) as http:
            body = http.get(f"http://docker.mirror.lab.internal:{port}/v2/?ns=docker.io").json()
        assert body == {"host": f"docker.mirror.lab.internal:{port}", "path": "/v2/?ns=docker.io"}
    finally:
        server.shutdown()
        server.server_close()


def test_no_overrides_means_default_transport() -> None:
    assert net.transport({}) is None and net.transport(None) is None


def test_one_tls_context_per_ca_setting_and_it_verifies(tmp_path, monkeypatch) -> None:
    """Clients share one verifying TLS context (building one per client cost ~50 ms of CPU each); it
    still refuses an unknown certificate, and SSL_CERT_FILE set later gives a context trusting that CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    cert, key = self_signed(tmp_path)
    server = LabHTTPServer(("127.0.0.1", 0), Echo)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    serve_in_thread(server)
    url = f"https://127.0.0.1:{server.server_address[1]}/v2/"
    try:
        default = net.ssl_context()
        assert net.ssl_context() is default
        assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
        with net.client() as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http.get(url)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert net.ssl_context() is not default
        with net.client({"registry.lab.internal": "127.0.0.1"}) as http:
            assert http.get(url).json()["path"] == "/v2/"
    finally:
        server.shutdown()
        server.server_close()
