"""runbook_lab.processes.unused_port: ports for services started later, where no client can take them."""

from __future__ import annotations

import socket
from pathlib import Path

from runbook_lab.processes import UNUSED_PORTS, port_free, unused_port


def test_unused_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [unused_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(UNUSED_PORTS.start <= p < min(UNUSED_PORTS.stop, ephemeral_start) for p in ports)
    with socket.socket() as s:  # free when handed out: a service can bind it
        s.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_or_handed_out_is_never_handed_out(monkeypatch) -> None:
    monkeypatch.setattr("runbook_lab.processes._HANDED_OUT", set())
    free = [p for p in UNUSED_PORTS if port_free(p)][:3]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free[0]))
        taken.listen()
        picks = iter([free[0], free[1], free[1], free[2]])
        monkeypatch.setattr("runbook_lab.processes.random.randrange", lambda a, b: next(picks))
        assert unused_port() == free[1]  # free[0] is listening
        assert unused_port() == free[2]  # free[1] was handed out already


def test_unused_ports_never_meet_the_lab_parameters_ports_or_the_benchs() -> None:
    """Tests start labs on parameters/lab.yaml's fixed ports (and the bench on those + PORT_OFFSET):
    a port handed out for another service must never be one of them."""
    import yaml

    from bench.common import PORT_OFFSET, lab_ports

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "parameters" / "lab.yaml").read_text())
    fixed = lab_ports(data)
    assert fixed and not [p for p in fixed | {p + PORT_OFFSET for p in fixed} if p in UNUSED_PORTS]
