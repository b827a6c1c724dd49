"""Kernel path for lab nodes: a veth pair and NAT, so the node's 127.0.0.1:<port> is the lab's, and only that.

A lab node lives in its own network namespace (node.py). Its 127.0.0.1 must still reach the lab's service
ports, on the same numbers, so URLs from the parameters file work unchanged inside the node. This module
does that in the kernel, instead of the user-space port bridge (bridge.py, kept as the fallback):

    node netns                                            lab netns (where the lab's services listen)
    client -> 127.0.0.1:P  --DNAT-->  LAB:P   ==veth==>   rblN  --DNAT-->  127.0.0.1:P  (service)
              (SNAT to NODE on lab0)

* Addresses: one /30 per node from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed on the
  internet): LAB = .1 on the lab side (`rbl<N>`), NODE = .2 on the node side (`lab0`). N is the first free
  interface name: `ip link add` fails on a taken name, so concurrent labs in one namespace cannot collide.
* Node side (rules in the node's namespace; they vanish with it): nat OUTPUT DNATs 127.0.0.1:P to LAB:P
  for each lab port and POSTROUTING SNATs to NODE. `route_localnet` on lab0 lets a packet whose source is
  127.0.0.1 leave by a non-loopback device after the DNAT (the kernel refuses that route otherwise; the
  SNAT then gives it the node's address). Only the /30's connected route exists: no default route, so any
  other address is "network is unreachable"; an unlisted port of 127.0.0.1 is refused by the node's own
  kernel.
* Lab side (rules in chains named `RBLAB-rbl<N>`, or matching `-i rbl<N>`, in the lab's namespace): nat
  PREROUTING from rbl<N> DNATs LAB:P to 127.0.0.1:P (`route_localnet` on rbl<N>: a loopback destination
  arriving on another device is martian otherwise); filter INPUT from rbl<N> accepts only 127.0.0.1:P of
  the lab ports (and replies of accepted connections), resets every other TCP connection and rejects
  everything else; FORWARD drops whatever comes from rbl<N>, so nothing is routed onward whatever the
  namespace's ip_forward. The lab side is what enforces the isolation: the node is root in its own
  namespace (userData runs as root) and could rewrite its own rules, not these. IPv6 is off on both ends
  (no link-local path around the rules).
* The lab's services see 127.0.0.1 as the client (nat INPUT SNAT), as with the bridge: every node shares
  one source address, like nodes behind one NAT gateway, so Docker Hub's per-address pull limit (the lab's
  stand-in, dockerhub.py) counts the node pulls and the runbook host's together, as before.
* A lab service that is down answers its DNATed SYN with a reset: "connection refused", like a direct
  connection (the bridge could only reset an accepted connection).
* Clean-up: the veth pair goes with the node's namespace (the kernel deletes both ends); `Veth.close()`
  removes the lab-side chains and rules, and `sweep()` removes those of interfaces that no longer exist
  (a lab killed before it could clean up), which `lab up` and `lab down` run.

iptables here is iptables-nft (Debian's default); `iptables-save`/`iptables-restore --noflush` apply each
side's rules in one transaction. `python -m runbook_lab.veth sweep` runs the sweep by hand.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NET = ipaddress.ip_network("198.18.0.0/15")
MAX_NODES = 4096  # /30 blocks used: 198.18.0.0 - 198.18.63.255
PREFIX = "rbl"  # lab-side interface names: rbl0, rbl1, ...
NODE_IF = "lab0"
CHAIN_PREFIX = "RBLAB-"
MTU = 65520  # loopback-sized frames: the path it replaces was loopback on both sides
_TIMEOUT = 20
_IF_RE = re.compile(rf"^{PREFIX}\d+$")
_lock = (
    threading.Lock()
)  # one allocation at a time in this process; `ip link add` arbitrates between processes


class VethError(RuntimeError):
    """The kernel path could not be set up; the message says which step failed and why."""


def tools_missing() -> list[str]:
    return [t for t in ("ip", "nsenter", "iptables-save", "iptables-restore") if not shutil.which(t)]


def addresses(index: int) -> tuple[str, str]:
    """(lab side, node side) addresses of node block `index`."""
    if not 0 <= index < MAX_NODES:
        raise VethError(f"no address block {index} (0..{MAX_NODES - 1})")
    base = int(NET.network_address) + 4 * index
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise VethError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")


def _write_sysctl(path: str, value: str) -> None:
    # /proc/sys/net shows the namespace of the writing process: this is the lab's
    try:
        Path(path).write_text(value)
    except OSError as exc:
        raise VethError(f"cannot set {path}: {exc}") from None


def interfaces() -> set[str]:
    """Names of this namespace's network interfaces (ours and others)."""
    import socket

    return {name for _, name in socket.if_nameindex()}


# -- rules ---------------------------------------------------------------------------------------------
def chain(ifname: str) -> str:
    return CHAIN_PREFIX + ifname


def lab_rules(ifname: str, lab_addr: str, ports: Iterable[int]) -> str:
    """iptables-restore input (with --noflush) for the lab side of one node."""
    c = chain(ifname)
    ports = sorted(set(int(p) for p in ports))
    nat = [
        f"-A {c} -d {lab_addr}/32 -p tcp -m tcp --dport {p} -j DNAT --to-destination 127.0.0.1" for p in ports
    ]
    accept = [f"-A {c} -d 127.0.0.1/32 -p tcp -m tcp --dport {p} -j ACCEPT" for p in ports]
    return "\n".join(
        [
            "*nat",
            f":{c} - [0:0]",
            f"-I PREROUTING 1 -i {ifname} -j {c}",
            f"-A INPUT -i {ifname} -j SNAT --to-source 127.0.0.1",
            *nat,
            "COMMIT",
            "*filter",
            f":{c} - [0:0]",
            f"-I INPUT 1 -i {ifname} -j {c}",
            f"-I FORWARD 1 -i {ifname} -j DROP",
            f"-A {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            *accept,
            f"-A {c} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A {c} -j REJECT --reject-with icmp-port-unreachable",
            "COMMIT",
            "",
        ]
    )


def node_rules(lab_addr: str, node_addr: str, ports: Iterable[int]) -> str:
    """iptables-restore input (with --noflush) for the node side, applied inside the node's namespace."""
    ports = sorted(set(int(p) for p in ports))
    dnat = [
        f"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport {p} -j DNAT --to-destination {lab_addr}"
        for p in ports
    ]
    return "\n".join(
        ["*nat", *dnat, f"-A POSTROUTING -o {NODE_IF} -j SNAT --to-source {node_addr}", "COMMIT", ""]
    )


def _removal(save_text: str, table: str, ifnames: set[str]) -> list[str]:
    """iptables-restore lines that delete every rule and chain of `ifnames` found in `iptables-save` text."""
    chains = {chain(i) for i in ifnames}
    deletes, drops = [], []
    for line in save_text.splitlines():
        if line.startswith(":") and line[1:].split(" ", 1)[0] in chains:
            name = line[1:].split(" ", 1)[0]
            drops += [f"-F {name}", f"-X {name}"]
        elif line.startswith("-A "):
            words = line.split()
            builtin, rest = words[1], words[2:]
            if builtin in chains:
                continue  # goes with -F
            if any(rest[k] == "-i" and rest[k + 1] in ifnames for k in range(len(rest) - 1)) or any(
                w in chains for w in rest
            ):
                deletes.append("-D " + line[3:])
    if not deletes and not drops:
        return []
    return [f"*{table}", *deletes, *drops, "COMMIT"]


def _save(table: str) -> str:
    done = _run(["iptables-save", "-t", table])
    _check(done, f"iptables-save -t {table}")
    return done.stdout


def remove_rules(ifnames: Iterable[str]) -> None:
    """Delete the lab-side chains and rules of these interfaces (whether the interfaces exist or not)."""
    names = set(ifnames)
    if not names:
        return
    lines = []
    for table in ("nat", "filter"):
        lines += _removal(_save(table), table, names)
    if lines:
        _check(_run(["iptables-restore", "--noflush"], "\n".join(lines) + "\n"), "iptables-restore (removal)")


def leftover_interfaces() -> set[str]:
    """Interface names that own RBLAB- chains in this namespace (present or not)."""
    names: set[str] = set()
    for table in ("nat", "filter"):
        for line in _save(table).splitlines():
            if line.startswith(":" + CHAIN_PREFIX):
                name = line[1 + len(CHAIN_PREFIX) :].split(" ", 1)[0]
                if _IF_RE.match(name):
                    names.add(name)
    return names


def sweep() -> list[str]:
    """Remove the lab-side rules of node interfaces that no longer exist (their node ended without clean-up);
    the rules of live nodes, this lab's or another's, stay. Returns the interface names cleaned."""
    if tools_missing():
        return []
    try:
        stale = sorted(leftover_interfaces() - interfaces())
        remove_rules(stale)
    except (VethError, OSError, subprocess.TimeoutExpired):
        return []
    return stale


# -- one node ------------------------------------------------------------------------------------------
@dataclass
class Veth:
    """The kernel path of one running node (lab-side view)."""

    ifname: str
    lab_addr: str
    node_addr: str
    node_pid: int
    ports: list[int]

    def describe(self) -> dict[str, object]:
        return {
            "mode": "veth",
            "lab_if": self.ifname,
            "node_if": NODE_IF,
            "lab_addr": self.lab_addr,
            "node_addr": self.node_addr,
            "ports": self.ports,
        }

    def close(self) -> None:
        """Remove the lab side (the node side goes with the node's namespace). Safe to call twice."""
        with contextlib.suppress(VethError, OSError, subprocess.TimeoutExpired):
            if self.ifname in interfaces():
                _run(["ip", "link", "del", self.ifname])  # deletes the node's end too
        with contextlib.suppress(VethError, OSError, subprocess.TimeoutExpired):
            remove_rules([self.ifname])


def _create_pair(node_pid: int) -> tuple[str, int]:
    """Create rbl<N> here and its peer lab0 in the node's namespace; the first N that is free everywhere."""
    taken = interfaces()
    for index in range(MAX_NODES):
        name = f"{PREFIX}{index}"
        if name in taken:
            continue
        done = _run(
            [
                "ip", "link", "add", name, "mtu", str(MTU), "type", "veth",
                "peer", "name", NODE_IF, "mtu", str(MTU), "netns", str(node_pid),
            ]
        )  # fmt: skip
        if done.returncode == 0:
            return name, index
        if "File exists" in done.stderr and name in interfaces():
            continue  # another lab took it between our look and our add
        _check(done, f"ip link add {name} type veth peer name {NODE_IF} netns {node_pid}")
    raise VethError(f"no free {PREFIX}<N> interface name below {MAX_NODES}")


def connect(node_pid: int, ports: Iterable[int]) -> Veth:
    """Give the node whose namespace holds `node_pid` its kernel path to `ports` (see the module doc)."""
    missing = tools_missing()
    if missing:
        raise VethError(
            f"not found on PATH: {', '.join(missing)} (Debian packages iproute2, util-linux, iptables)"
        )
    ports = sorted(set(int(p) for p in ports))
    with _lock:
        ifname, index = _create_pair(node_pid)
    lab_addr, node_addr = addresses(index)
    veth = Veth(ifname, lab_addr, node_addr, node_pid, ports)
    try:
        remove_rules([ifname])  # a crashed lab's rules for the same name: never let them mix with ours
        _write_sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/route_localnet", "1")
        with contextlib.suppress(VethError):  # no IPv6 in this kernel: nothing to switch off
            _write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "1")
        _check(_run(["ip", "addr", "add", f"{lab_addr}/30", "dev", ifname]), f"ip addr add on {ifname}")
        _check(
            _run(["iptables-restore", "--noflush"], lab_rules(ifname, lab_addr, ports)),
            "iptables-restore (lab side)",
        )
        # node side, in the node's network namespace, in one shell; the iptables batch comes on stdin
        script = (
            "set -e; "
            f"v6=/proc/sys/net/ipv6/conf/{NODE_IF}/disable_ipv6; [ ! -e $v6 ] || echo 1 > $v6; "
            f"echo 1 > /proc/sys/net/ipv4/conf/{NODE_IF}/route_localnet; "
            f"ip addr add {node_addr}/30 dev {NODE_IF}; "
            f"ip link set {NODE_IF} up; "
            "exec iptables-restore --noflush"
        )
        _check(
            _run(
                ["nsenter", "-t", str(node_pid), "-n", "--", "sh", "-c", script],
                node_rules(lab_addr, node_addr, ports),
            ),
            "node side set-up (nsenter)",
        )
        _check(_run(["ip", "link", "set", ifname, "up"]), f"ip link set {ifname} up")
    except BaseException:
        veth.close()
        raise
    return veth


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["sweep"]:
        print("usage: python -m runbook_lab.veth sweep", file=sys.stderr)
        return 2
    cleaned = sweep()
    print(f"removed the rules of {len(cleaned)} gone lab node interface(s)", *cleaned)
    return 0


if __name__ == "__main__":
    sys.exit(main())
