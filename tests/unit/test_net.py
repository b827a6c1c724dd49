"""Host overrides: the connection goes to the address, the Host header keeps the name."""

from __future__ import annotations

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lib import net


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
