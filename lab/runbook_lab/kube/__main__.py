"""python -m runbook_lab.kube --port N [--host H] [--state-file PATH] [--kubeconfig PATH] [--crds PROFILE]

Serves until SIGTERM/SIGINT. Exit status 2 when the port is taken or an argument is bad.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from ..httpbase import run_until_signal
from .kubeconfig import write_kubeconfig
from .profiles import PROFILES
from .server import KubeStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runbook_lab.kube", description="Kubernetes API stand-in for the lab"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-file", type=Path, help="JSON state file; objects survive restarts")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument(
        "--crds",
        default="all",
        choices=sorted(PROFILES),
        help="Karpenter CRD set installed on a fresh state (default: all)",
    )
    args = parser.parse_args(argv)
    try:
        standin = KubeStandIn(args.state_file, port=args.port, host=args.host, crds=args.crds)
    except (OSError, ValueError) as exc:
        print(f"kube stand-in: cannot load state: {exc}", file=sys.stderr)
        return 2
    try:
        server = standin.bind()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"kube stand-in: port {args.port} on {args.host} is already in use", file=sys.stderr)
        else:
            print(f"kube stand-in: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        write_kubeconfig(args.kubeconfig, standin_url(args.host, standin.port))
    print(f"kube stand-in listening on {standin_url(args.host, standin.port)}", flush=True)
    run_until_signal([server], on_stop=standin.stop)
    return 0


def standin_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


if __name__ == "__main__":
    sys.exit(main())
