"""`runbook lab break <fault>` / `runbook lab fix <fault>` on one running lab (issue #13, 4(c)): every fault
is caught by the stage the fault table names — `runbook run <stage>` in plan mode exits 1 and prints the
message a learner should see — and after `lab fix` the same stage passes again.

One lab for the module (the lab's real ports, inside the private network namespace of `make test`), set up
by the runbook itself (stages 1-4 with --apply). wrong-node-password needs nodes that pull with a password:
it runs last, after stages 2 and 4 moved the same lab to authenticated pulls (static header on the nodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runbook_lab.breakage import BY_NAME, FAULTS
from runbook_lib.cli import main
from tests.support.labkit import lab_params_file

pytestmark = pytest.mark.netns

# wrong-node-password needs the authenticated parameters; every other fault runs on the anonymous lab
ANONYMOUS_FAULTS = [f.name for f in FAULTS if f.name != "wrong-node-password"]
SETUP_STAGES = ["nexus-repos", "nexus-security", "helm", "karpenter"]


class BrokenLab:
    def __init__(self, tmp: Path) -> None:
        self.params = lab_params_file(tmp)
        data = yaml.safe_load(self.params.read_text())
        v = data["verification"]  # verify runs once, for wrong-node-password: one small image, one pull
        v.update(images=["docker.io/library/demo:1"], repetitions=1, demonstrate_rate_limit=False)
        v["thresholds"]["min_warm_speedup"] = 0.1  # a 2 MiB image on loopback: no speed-up to speak of
        self.params.write_text(yaml.safe_dump(data))
        data["security"].update(mode="authenticated", anonymous_access="off")
        data["karpenter"]["credential_mode"] = "static-header"
        self.authenticated = tmp / "lab-authenticated.yaml"  # the same lab (lab.dir), nodes with a password
        self.authenticated.write_text(yaml.safe_dump(data))

    def cli(self, *argv: str, params: Path | None = None) -> int:
        return main([*argv, "--params", str(params or self.params)])


def run_stage(lab: BrokenLab, capsys, stage: str, params: Path | None = None) -> tuple[int, str]:
    capsys.readouterr()
    code = lab.cli("run", stage, params=params)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[BrokenLab]:
    under_test = BrokenLab(tmp_path_factory.mktemp("breakfix"))
    try:
        assert under_test.cli("lab", "up") == 0
        assert under_test.cli("run", *SETUP_STAGES, "--apply") == 0
        yield under_test
    finally:
        under_test.cli("lab", "down")


@pytest.mark.parametrize("name", ANONYMOUS_FAULTS)
def test_fault_is_caught_by_its_stage_and_fix_restores_it(lab: BrokenLab, capsys, name: str) -> None:
    fault = BY_NAME[name]
    assert lab.cli("lab", "break", name) == 0
    assert f"broke {name}" in capsys.readouterr().out
    code, out = run_stage(lab, capsys, fault.stage)
    assert code == 1, out
    assert fault.message in out, out

    assert lab.cli("lab", "fix", name) == 0
    assert f"fixed {name}" in capsys.readouterr().out
    code, out = run_stage(lab, capsys, fault.stage)
    assert code == 0, out
    # fixed is fixed: a second fix is a no-op that says so
    assert lab.cli("lab", "fix", name) == 0
    assert "not broken" in capsys.readouterr().out


def test_wrong_node_password_is_caught_by_verify(lab: BrokenLab, capsys) -> None:
    fault = BY_NAME["wrong-node-password"]
    # On the anonymous lab there is no password on the nodes to go wrong: refused, exit 2, nothing changed.
    assert lab.cli("lab", "break", fault.name) == 2
    assert "pull anonymously" in capsys.readouterr().err
    # The same lab, nodes pulling with the pull user's password (stage 4 rolls them onto the static header).
    assert lab.cli("run", "nexus-security", "karpenter", "--apply", params=lab.authenticated) == 0

    assert lab.cli("lab", "break", fault.name, params=lab.authenticated) == 0
    code, out = run_stage(lab, capsys, fault.stage, lab.authenticated)
    assert code == 1, out
    assert fault.message in out, out
    assert lab.cli("lab", "fix", fault.name, params=lab.authenticated) == 0
    code, out = run_stage(lab, capsys, fault.stage, lab.authenticated)
    assert code == 0, out
    # every fix took its record away: nothing of any fault is left to put back
    assert not list((Path(yaml.safe_load(lab.params.read_text())["lab"]["dir"]) / "breakage").glob("*.json"))
