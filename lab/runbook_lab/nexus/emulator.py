"""Assembles the emulated Nexus: state, REST resources, request log, the docker connector half, a server.

The connector half (connector.py, written separately) is optional at import time, so the REST half works
on its own: `ConnectorManager(state, cache_dir, host)` with `sync()`, `serve_path(handler, repo, subpath)`,
`stats()` and `close()`. `sync()` runs at start and after every repository change.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runbook_lab.nexus import rest_repos, rest_security, rest_system
from runbook_lab.nexus.requestlog import RequestLog
from runbook_lab.nexus.rest import NexusApp, NexusHTTPServer
from runbook_lab.nexus.state import NexusState

log = logging.getLogger(__name__)

DEFAULT_VERSION = "3.94.0-01"
CACHE_DIR = "docker-cache"  # under the data dir, so a restart keeps the proxied content


def connector_manager_class() -> Any | None:
    """The connector half's ConnectorManager, or None while it is not there."""
    try:
        from runbook_lab.nexus.connector import ConnectorManager
    except ImportError:
        return None
    return ConnectorManager


def all_routes() -> list:
    return [*rest_system.ROUTES, *rest_repos.ROUTES, *rest_security.ROUTES]


class NexusEmulator:
    """An in-process emulated Nexus on `host:port` (port 0 = ephemeral) serving `data_dir`."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 0,
        host: str = "127.0.0.1",
        version: str = DEFAULT_VERSION,
        edition: str | None = None,
        request_log: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
        connectors: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.version = version
        self.edition = edition
        self.request_log_path = Path(request_log) if request_log else None
        self.environ = os.environ if environ is None else environ
        self.use_connectors = connectors
        self.state: NexusState | None = None
        self.server: NexusHTTPServer | None = None
        self.connectors: Any | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def bind(self) -> NexusEmulator:
        """Load or initialise the state, bind the main port and start the connectors (no serving yet).

        Raises OSError when the port is taken."""
        self.state = NexusState(self.data_dir, self.version, self.edition, self.environ)
        app = NexusApp(self.state, all_routes(), RequestLog(self.request_log_path))
        self.server = NexusHTTPServer((self.host, self.requested_port), app)
        manager_class = connector_manager_class() if self.use_connectors else None
        if manager_class is not None:
            try:
                self.connectors = manager_class(self.state, self.data_dir / CACHE_DIR, self.host)
                app.connectors = self.connectors
                self.state.subscribe(self._sync_connectors)
                self.connectors.sync()
            except BaseException:
                self.server.server_close()
                raise
        return self

    def start(self) -> NexusEmulator:
        if self.server is None:
            self.bind()
        assert self.server is not None
        # a short poll interval keeps stop() quick (shutdown waits for the serve loop's next poll)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"nexus-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close_connectors(self) -> None:
        if self.connectors is not None:
            self.connectors.close()
            self.connectors = None

    def stop(self) -> None:
        if self.server is not None:
            if self._thread is not None:
                self.server.shutdown()
                self._thread.join(timeout=5)
            self.server.server_close()
            self.server = None
        self.close_connectors()

    def __enter__(self) -> NexusEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- info ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _sync_connectors(self) -> None:
        if self.connectors is None:
            return
        try:
            self.connectors.sync()
        except Exception:  # a connector failing to bind must not fail the REST call that changed the config
            log.exception("docker connectors: sync after a repository change failed")
