"""Kernel path (runbook_lab.veth): a node namespace reaches the lab's listed ports over a veth pair, and only
those; clean-up on close, and the sweep of a killed node's leftovers.

The test's own (private) network namespace plays the lab; the "node" is a fresh `unshare --net` namespace
held by a sleeping process, probed with nsenter + curl, exactly as LabNode's namespaces are.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook_lab import veth
from runbook_lab.processes import unused_port
from runbook_lab.veth import NODE_IF, Veth, VethError, connect, interfaces, leftover_interfaces, sweep

pytestmark = pytest.mark.netns
PAYLOAD = os.urandom(3 * 1024 * 1024)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/who":
            body = self.client_address[0].encode()
        else:
            body = PAYLOAD if self.path == "/big" else f"port {self.server.server_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _server(host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _node_namespace() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec sleep 600"],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for the exec: then the namespace and lo are in place
        try:
            if os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"):
                return proc
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the node namespace did not start")


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(autouse=True)
def _needs_iptables() -> None:
    if veth.tools_missing():
        pytest.skip(f"not installed: {veth.tools_missing()}")


@pytest.fixture
def wired() -> Iterator[tuple]:
    """`up` (listed, served on 127.0.0.1), `hidden` (served on 0.0.0.0, not listed), `down` (listed, no
    server) and a node namespace connected to [up, down]."""
    up, hidden = _server(), _server("0.0.0.0")
    down = unused_port()
    node = _node_namespace()
    path = connect(node.pid, [up.server_address[1], down])
    try:
        yield node.pid, up.server_address[1], hidden.server_address[1], down, path
    finally:
        _end(node)
        path.close()
        up.shutdown()
        hidden.shutdown()


def inside(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "--", *argv], capture_output=True, text=True, timeout=30
    )


def curl(pid: int, url: str) -> subprocess.CompletedProcess[str]:
    return inside(pid, "curl", "-sS", "-m", "5", url)


def test_only_the_listed_lab_ports_are_reachable_on_the_node_loopback(wired) -> None:
    pid, up, hidden, down, path = wired
    assert curl(pid, f"http://127.0.0.1:{up}/").stdout == f"port {up}"  # the URL of the parameters file
    assert curl(pid, f"http://localhost:{up}/").stdout == f"port {up}"
    assert curl(pid, f"http://127.0.0.1:{up}/who").stdout == "127.0.0.1"  # one source, as with the bridge
    # served in the lab on every address, not listed: refused on the node's loopback and on the lab's side
    for url in (f"http://127.0.0.1:{hidden}/", f"http://{path.lab_addr}:{hidden}/"):
        refused = curl(pid, url)
        assert refused.returncode == 7 and "Couldn't connect" in refused.stderr, (url, refused)
    # listed but nothing serves it: a failed connection (refused by the lab's kernel), never a reply
    gone = curl(pid, f"http://127.0.0.1:{down}/")
    assert gone.returncode == 7 and gone.stdout == "", gone
    # anything else: no route
    for url in ("http://10.1.2.3/", "http://192.0.2.1:80/", "http://8.8.8.8/"):
        unreachable = curl(pid, url)
        assert unreachable.returncode == 7, (url, unreachable)


def test_the_node_has_no_default_route_and_no_ipv6(wired) -> None:
    pid, *_, path = wired
    routes = inside(pid, "ip", "-4", "route", "show").stdout.strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith(f"{path.node_addr[:-1]}0/30 dev {NODE_IF}"), routes
    assert not [r for r in routes if r.startswith("default")]
    assert inside(pid, "ip", "-6", "route", "show").stdout.strip() == ""
    assert inside(pid, "cat", f"/proc/sys/net/ipv6/conf/{NODE_IF}/disable_ipv6").stdout.strip() == "1"
    assert path.ifname in interfaces() and path.lab_addr.startswith("198.1")


def test_large_bodies_cross_intact(wired) -> None:
    pid, up, *_ = wired
    done = inside(pid, "sh", "-c", f"curl -sS http://127.0.0.1:{up}/big | sha256sum")
    assert done.stdout.split()[0] == hashlib.sha256(PAYLOAD).hexdigest()


def test_close_removes_the_interface_and_every_lab_side_rule() -> None:
    server = _server()
    node = _node_namespace()
    try:
        path = connect(node.pid, [server.server_address[1]])
        assert path.ifname in leftover_interfaces() and path.ifname in interfaces()
        path.close()
        assert path.ifname not in interfaces() and path.ifname not in leftover_interfaces()
        assert NODE_IF not in inside(node.pid, "ip", "-o", "link").stdout  # the peer went with it
        # the node's own DNAT now points at no route: the connection fails (times out), never a reply
        after = curl(node.pid, f"http://127.0.0.1:{server.server_address[1]}/")
        assert after.returncode in (7, 28) and after.stdout == "", after
        path.close()  # twice is harmless
    finally:
        _end(node)
        server.shutdown()


def test_a_killed_node_leaves_rules_the_sweep_removes_and_live_nodes_keep_theirs() -> None:
    server = _server()
    port = server.server_address[1]
    killed, alive = _node_namespace(), _node_namespace()
    try:
        gone = connect(killed.pid, [port])
        live = connect(alive.pid, [port])
        assert gone.ifname != live.ifname and gone.lab_addr != live.lab_addr
        _end(killed)  # a crash: no close(); the kernel deletes the pair with the namespace, the rules stay
        deadline = time.monotonic() + 10
        while gone.ifname in interfaces() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone.ifname not in interfaces() and gone.ifname in leftover_interfaces()
        assert sweep() == [gone.ifname]
        assert leftover_interfaces() == {live.ifname}
        assert curl(alive.pid, f"http://127.0.0.1:{port}/").stdout == f"port {port}"  # untouched
        assert sweep() == []
        # a new node may take the freed name: it starts from clean chains
        again = _node_namespace()
        try:
            reused = connect(again.pid, [port])
            assert reused.ifname == gone.ifname
            assert curl(again.pid, f"http://127.0.0.1:{port}/").stdout == f"port {port}"
            reused.close()
        finally:
            _end(again)
        live.close()
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                _end(proc)
        server.shutdown()


def test_a_node_namespace_that_is_gone_is_a_clear_error_and_leaves_nothing() -> None:
    node = _node_namespace()
    pid = node.pid
    _end(node)
    before = interfaces()
    with pytest.raises(VethError, match="ip link add"):
        connect(pid, [15000])
    assert interfaces() == before


def test_rule_texts_name_only_the_listed_ports() -> None:
    lab = veth.lab_rules("rbl7", "198.18.0.29", [5001, 5000, 5001])
    assert lab.count("--dport 5000 ") == 2 and lab.count("--dport 5001 ") == 2  # one DNAT, one ACCEPT
    assert "-I FORWARD 1 -i rbl7 -j DROP" in lab and "--reject-with tcp-reset" in lab
    node = veth.node_rules("198.18.0.29", "198.18.0.30", [5000])
    assert "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 5000 -j DNAT --to-destination 198.18.0.29" in node
    assert veth.addresses(7) == ("198.18.0.29", "198.18.0.30")
    with pytest.raises(VethError):
        veth.addresses(veth.MAX_NODES)
    assert Veth("rbl7", "198.18.0.29", "198.18.0.30", 1, [5000]).describe()["mode"] == "veth"
