"""`runbook lab break|fix|faults` without a running lab: the fault table, the CLI's refusals (exit 2 before
any request), the manual `tee -a` userData the lab writes, and the stage checks that catch the faults, on
plans built by hand. The faults on a running lab: tests/integration/test_lab_break.py.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from runbook_lab import breakage
from runbook_lib import params as params_mod
from runbook_lib.cli import main
from runbook_lib.karpenter import foreign_writes, userdata
from runbook_lib.nexus import repositories, security
from runbook_lib.params import STAGES
from runbook_lib.plan import Change, Plan
from tests.support.labkit import lab_params_file

REPO = Path(__file__).resolve().parents[2]
ISSUE_FAULTS = {
    "tee-append",
    "single-endpoint",
    "token-realm-off",
    "anonymous-off",
    "nexus-down-at-boot",
    "wrong-node-password",
    "wrong-remote-url",
}


@pytest.fixture(scope="module")
def lab_params() -> params_mod.RunbookParams:
    return params_mod.load(REPO / "parameters" / "lab.yaml")


# -- the table and the CLI ------------------------------------------------------------------------------
def test_the_table_names_every_fault_of_the_issue_once_with_a_stage_and_a_message() -> None:
    names = [f.name for f in breakage.FAULTS]
    assert sorted(names) == sorted(ISSUE_FAULTS)
    for f in breakage.FAULTS:
        assert f.stage in STAGES and f.message and f.description


@pytest.mark.parametrize("argv", [["lab", "faults"], ["lab", "break", "--list"]])
def test_faults_lists_each_fault_with_its_stage(capsys, argv: list[str]) -> None:
    assert main([*argv, "--params", "/nonexistent/lab.yaml"]) == 0  # no parameters needed to list
    lines = capsys.readouterr().out.splitlines()
    for f in breakage.FAULTS:
        assert any(line.split()[:2] == [f.name, f.stage] for line in lines), f.name


@pytest.mark.parametrize(
    "argv, said",
    [
        (["lab", "break", "tee-apend"], "unknown fault 'tee-apend'"),
        (["lab", "fix", "nope"], "unknown fault 'nope'"),
        (["lab", "break"], "name a fault"),
    ],
)
def test_an_unknown_or_missing_fault_exits_2_listing_the_faults(capsys, argv: list[str], said: str) -> None:
    # The parameters file does not exist: the name is refused before anything is read or sent.
    assert main([*argv, "--params", "/nonexistent/lab.yaml"]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert all(name in err for name in ISSUE_FAULTS)


def test_up_down_status_take_no_fault_name(capsys) -> None:
    assert main(["lab", "status", "tee-append", "--params", "/nonexistent/lab.yaml"]) == 2
    assert "takes no fault name" in capsys.readouterr().err


def test_wrong_node_password_on_a_lab_whose_nodes_pull_anonymously_exits_2(tmp_path, capsys) -> None:
    # Nothing runs: the refusal comes before any request (a request would fail with exit 1, not 2).
    assert main(["lab", "break", "wrong-node-password", "--params", str(lab_params_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "pull anonymously" in err and "static-header" in err and "Traceback" not in err
    assert not (tmp_path / "lab" / "breakage" / "wrong-node-password.json").exists()


def test_fix_of_a_fault_not_broken_is_a_no_op_that_says_so(tmp_path, capsys) -> None:
    assert main(["lab", "fix", "token-realm-off", "--params", str(lab_params_file(tmp_path))]) == 0
    assert "token-realm-off: not broken" in capsys.readouterr().out


def test_a_break_record_outlives_the_breaker_so_fix_works_after_a_restart(tmp_path, lab_params) -> None:
    from runbook_lab.orchestrator import Lab

    first = breakage.Breaker(Lab(lab_params, tmp_path))
    first._save("anonymous-off", {"fault": "anonymous-off", "enabled": True})
    again = breakage.Breaker(Lab(lab_params, tmp_path))  # a new process: only the lab folder is shared
    assert again.broken() == ["anonymous-off"]
    assert again.record("anonymous-off") == {"fault": "anonymous-off", "enabled": True}


# -- what break writes: the manual tee -a steps ---------------------------------------------------------
def test_the_manual_steps_leave_docker_io_hosts_toml_undecodable(tmp_path) -> None:
    script = breakage.manual_user_data(
        {"docker.io": "http://docker.mirror:80", "gcr.io": "http://gcr.mirror:80"}
    )
    assert script.count("tee -a /etc/containerd/certs.d/docker.io/hosts.toml") == 2
    # run them for real, below tmp_path instead of /etc
    local = script.replace("/etc/containerd", str(tmp_path / "containerd")).replace("systemctl", "true")
    subprocess.run(["bash", "-e"], input=local, text=True, check=True)
    gcr = tomllib.loads((tmp_path / "containerd/certs.d/gcr.io/hosts.toml").read_text())
    assert gcr["server"] == "https://gcr.io"
    with pytest.raises(tomllib.TOMLDecodeError):  # `server` twice: what containerd cannot decode either
        tomllib.loads((tmp_path / "containerd/certs.d/docker.io/hosts.toml").read_text())


# -- the stage checks that catch the faults ---------------------------------------------------------------
def test_node_preflight_fails_on_a_foreign_part_that_appends_to_hosts_toml() -> None:
    manual = breakage.manual_user_data({"docker.io": "http://docker.mirror:80"})
    merged = userdata.merge(manual, "#!/bin/bash\necho the runbook's part\n", "AL2023")
    [check] = foreign_writes.checks("default", merged)
    assert check.status == "fail"
    assert "userData part 2 (not the runbook's) appends to /etc/containerd/certs.d/docker.io" in check.detail
    assert "appended more than once" in check.detail
    # the runbook's own part alone: nothing to say
    assert foreign_writes.checks("default", userdata.merge(None, "#!/bin/bash\necho ours\n", "AL2023")) == []


def test_a_foreign_part_that_overwrites_hosts_toml_is_a_warning() -> None:
    script = "#!/bin/bash\ncat > /etc/containerd/certs.d/quay.io/hosts.toml <<EOF\nserver = 'x'\nEOF\n"
    [check] = foreign_writes.checks("default", script)
    assert check.status == "warn" and "/etc/containerd/certs.d/quay.io/hosts.toml" in check.detail


def test_nexus_repos_plan_fails_on_one_group_for_several_upstreams(lab_params) -> None:
    plan = Plan("nexus-repos", apply=False)
    members = [["docker-hub", "gcr-io", "quay-io"], ["docker-hub"]]
    plan.add(Change("docker proxy", "gcr-io", "update", {"docker.httpPort": [None, 18083]}))
    plan.add(Change("docker group", "docker", "update", {"group.memberNames": members}))
    [check] = repositories.drift_checks(lab_params, plan)
    assert not check.ok and "?ns=" in check.detail
    assert "gcr-io (gcr.io), quay-io (quay.io)" in check.detail
    assert "gcr-io has no connector of its own" in check.detail
    assert repositories.drift_checks(lab_params, Plan("nexus-repos", apply=True)) == []


def test_the_group_document_takes_other_upstreams_proxies_out_and_keeps_the_rest(lab_params) -> None:
    hub = lab_params.upstream("docker.io")
    actual = {"group": {"memberNames": ["docker-hub", "gcr-io", "team-hosted"]}}
    assert repositories.group_document(lab_params, hub, actual)["group"]["memberNames"] == [
        "docker-hub",
        "team-hosted",
    ]


def test_nexus_repos_plan_fails_on_a_remote_url_that_does_not_answer(lab_params) -> None:
    plan = Plan("nexus-repos", apply=False)
    wrong = "http://127.0.0.1:9"  # discard: nothing answers
    plan.add(
        Change("docker proxy", "quay-io", "update", {"proxy.remoteUrl": [wrong, "http://127.0.0.1:15002"]})
    )
    [check] = repositories.drift_checks(lab_params, plan)
    assert not check.ok and "remote URL" in check.detail and wrong in check.detail


def test_nexus_security_plan_names_the_token_realm_and_anonymous_access(lab_params) -> None:
    plan = Plan("nexus-security", apply=False)
    realms = [["NexusAuthenticatingRealm"], ["NexusAuthenticatingRealm", "DockerToken"]]
    plan.add(Change("realms", "active", "update", {"order": realms}))
    plan.add(Change("anonymous access", "global", "update", {"enabled": [False, True]}))
    realm, anonymous = security.drift_checks(lab_params, plan)
    assert not realm.ok and "DockerToken" in realm.detail
    assert not anonymous.ok and "anonymous access is disabled" in anonymous.detail
    assert security.drift_checks(lab_params, Plan("nexus-security", apply=True)) == []
