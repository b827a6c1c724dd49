"""TLS in front of a plain-HTTP stand-in: what a pod meets at ``https://$KUBERNETES_SERVICE_HOST:PORT``.

In a pod the Kubernetes client's in-cluster configuration always speaks HTTPS to the API server and checks
its certificate against the service account's ``ca.crt`` (kubernetes-client/python
``config/incluster_config.py``). The lab's API stand-in serves plain HTTP on loopback, so this front
terminates TLS with a certificate the caller provides and passes the bytes through to the stand-in.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path


class TLSFront:
    def __init__(self, backend_port: int, certfile: Path, keyfile: Path, host: str = "127.0.0.1") -> None:
        self.backend = (host, backend_port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(certfile), str(keyfile))
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"tls-front-{self.port}")

    def start(self) -> TLSFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> TLSFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        try:
            backend = socket.create_connection(self.backend, timeout=10)
        except OSError:
            client.close()
            return
        backend.settimeout(None)
        threading.Thread(target=_pump, args=(backend, client), daemon=True).start()
        _pump(client, backend)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until either side closes, then close both (a half-closed keep-alive is not worth keeping)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()
