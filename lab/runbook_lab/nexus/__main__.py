"""`python -m runbook_lab.nexus --data-dir DIR --port N [...]`: serve the emulated Nexus until SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from runbook_lab.httpbase import run_until_signal
from runbook_lab.nexus.emulator import DEFAULT_VERSION, NexusEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runbook_lab.nexus", description="Emulated Nexus Repository 3 (lab stand-in)"
    )
    parser.add_argument("--data-dir", required=True, help="state, admin.password and docker cache live here")
    parser.add_argument("--port", type=int, required=True, help="main (REST) port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="Nexus version to emulate, e.g. 3.94.0-01")
    parser.add_argument("--edition", default=None, help="OSS, COMMUNITY or PRO (default: by version)")
    parser.add_argument("--request-log", default=None, help="JSONL file recording every REST request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nexus %(levelname)s %(message)s")

    emulator = NexusEmulator(
        args.data_dir,
        port=args.port,
        host=args.host,
        version=args.version,
        edition=args.edition,
        request_log=args.request_log,
    )
    try:
        emulator.bind()
    except ValueError as e:
        print(f"nexus emulator: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(
                f"nexus emulator: port already in use ({e.strerror}): {args.host}:{args.port} or a "
                "docker connector port",
                file=sys.stderr,
            )
        else:
            print(f"nexus emulator: cannot start: {e}", file=sys.stderr)
        return 2
    assert emulator.server is not None and emulator.state is not None
    logging.info(
        "Nexus/%s (%s) emulator listening on %s, data in %s",
        emulator.state.version,
        emulator.state.edition,
        emulator.url,
        args.data_dir,
    )
    run_until_signal([emulator.server], on_stop=emulator.close_connectors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
