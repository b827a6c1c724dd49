"""Credential rotation without a bypass window: the parameters, the phase logic, and what stage 4 writes
for nodes in each phase (docs/rotation.md). Against Nexus and real lab nodes:
tests/integration/test_rotation.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib import params as params_mod
from runbook_lib.cli import main
from runbook_lib.containerd.hosts import basic_header
from runbook_lib.karpenter import credentials, nodes, rollout
from runbook_lib.nexus import security

REPO = Path(__file__).resolve().parents[2]
LAB = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
PASSWORDS = {"env:OLD_PW": "old-secret", "env:NEW_PW": "new-secret"}


def data(
    rotation: str | None = "start", mode: str = "static-header", **security_extra: Any
) -> dict[str, Any]:
    d = copy.deepcopy(LAB)
    d["security"] = {"mode": "authenticated", "user": "docker-pull", "pull_password": "env:OLD_PW"}
    if rotation:
        d["security"].update(rotation=rotation, next_user="docker-pull-2", next_pull_password="env:NEW_PW")
    d["security"].update(security_extra)
    d["karpenter"]["credential_mode"] = mode
    if mode == "secrets-manager":
        d["karpenter"]["credentials_secret_id"] = "mirror/pull"
        if rotation:
            d["karpenter"]["next_credentials_secret_id"] = "mirror/pull-2"
    return d


def parse(d: dict[str, Any]) -> params_mod.RunbookParams:
    return params_mod.parse(d, "test", REPO / "parameters")


def resolve(ref: str, user: str | None = None) -> str:
    return PASSWORDS[ref]


# -- params check -----------------------------------------------------------------------------------------
def _sec(**kw: Any):
    return lambda d: d["security"].update(kw)


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda d: d["security"].update(mode="anonymous"), "security.rotation", "authenticated"),
        (lambda d: d["security"].pop("next_pull_password"), "security.rotation", "next_pull_password"),
        (_sec(next_user="docker-pull"), "security.next_user", "one password per user"),
        (_sec(next_user="admin"), "security.next_user", "one password per user"),
        (_sec(rotate_password=True), "security.rotate_password", "in place"),
        (_sec(rotation=None), "security.next_user", "rotation: start"),
        (_sec(rotation="halfway"), "security.rotation", "start"),
    ],
)
def test_params_check_names_the_rotation_field(tmp_path, capsys, mutate, field, reason) -> None:
    d = data()
    mutate(d)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["params", "check", str(path)]) == 2
    out = capsys.readouterr().out
    assert any(f": {field}: " in line and reason in line for line in out.splitlines()), out


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d["karpenter"].pop("next_credentials_secret_id"), "no node would roll"),
        (lambda d: d["karpenter"].update(next_credentials_secret_id="mirror/pull"), "no node would roll"),
        (lambda d: d["security"].update(rotation=None, next_user=None, next_pull_password=None), "only for"),
    ],
)
def test_secrets_manager_rotation_needs_a_secret_of_its_own(mutate, reason) -> None:
    d = data(mode="secrets-manager")
    mutate(d)
    with pytest.raises(params_mod.ParamsError) as err:
        parse(d)
    assert [p for p, m in err.value.problems if reason in m] == ["karpenter.next_credentials_secret_id"]


def test_a_rotation_file_passes_and_its_second_password_is_a_secret_reference(tmp_path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data(mode="secrets-manager")))
    assert main(["params", "check", str(path)]) == 0
    refs = dict(parse(data()).secret_refs())
    assert str(refs["security.next_pull_password"]) == "env:NEW_PW"
    with pytest.raises(params_mod.ParamsError):
        parse(data(next_pull_password="plain-text-password"))  # a value, not a reference


# -- what nodes get ---------------------------------------------------------------------------------------
def test_nodes_get_the_next_user_once_a_rotation_starts_and_keep_it_through_finish() -> None:
    steady = parse(data(rotation=None))
    assert credentials.node_user(steady) == ("docker-pull", "env:OLD_PW")
    for phase in ("start", "finish"):
        p = parse(data(rotation=phase))
        assert credentials.node_user(p) == ("docker-pull-2", "env:NEW_PW")
        assert credentials.hosts_authorization(p, resolve) == basic_header("docker-pull-2", "new-secret")
    assert credentials.hosts_authorization(steady, resolve) == basic_header("docker-pull", "old-secret")


def test_static_header_rotation_changes_the_user_data_so_karpenter_drifts_the_nodes() -> None:
    before = nodes.render(parse(data(rotation=None)), resolve).generated.payload
    during = nodes.render(parse(data("start")), resolve).generated.payload
    assert before != during
    assert nodes.render(parse(data("finish")), resolve).generated.payload == during  # finish rolls nothing


def test_secrets_manager_rotation_points_the_boot_script_at_the_next_secret() -> None:
    before = nodes.render(parse(data(rotation=None, mode="secrets-manager")), resolve).generated.payload
    p = parse(data("start", mode="secrets-manager"))
    during = nodes.render(p, resolve).generated.payload
    assert credentials.node_secret_id(p) == "mirror/pull-2"
    assert "mirror/pull-2" in during and "mirror/pull-2" not in before and during != before
    assert credentials.node_secret_value(p, resolve) == "docker-pull-2:new-secret"
    assert "new-secret" not in during and "old-secret" not in during  # userData holds only the id


def test_proof_users_follow_the_phase() -> None:
    assert security.proof_users(parse(data(rotation=None))) == [("docker-pull", "env:OLD_PW", True)]
    assert security.proof_users(parse(data("start"))) == [
        ("docker-pull", "env:OLD_PW", True),
        ("docker-pull-2", "env:NEW_PW", True),
    ]
    assert security.proof_users(parse(data("finish"))) == [
        ("docker-pull", "env:OLD_PW", False),  # retired: must be refused
        ("docker-pull-2", "env:NEW_PW", True),
    ]


def test_changing_the_password_in_place_is_flagged() -> None:
    flags = credentials.flags(parse(data(rotation=None, rotate_password=True)))
    assert any("rotate_password" in f and "upstream" in f for f in flags)
    assert not any("rotate_password" in f for f in credentials.flags(parse(data("start"))))


# -- the phase --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rotation", "next_exists", "old_exists", "on_old", "phase", "next_says"),
    [
        (None, None, None, None, "none", "security.rotation: start"),
        ("start", False, True, None, "adding", "creates docker-pull-2"),
        ("start", True, True, None, "rolling", "stage 4"),
        ("start", True, True, ["node class default does not carry docker-pull-2 yet"], "rolling", "stage 4"),
        ("start", True, True, [], "ready to retire", "security.rotation: finish"),
        ("finish", True, True, ["default: 1 old"], "blocked", "rollout first"),
        ("finish", True, True, [], "retiring", "retires docker-pull"),
        ("finish", True, False, None, "retired", "move next_user/next_pull_password"),
        ("finish", False, True, None, "adding", "creates docker-pull-2"),
    ],
)
def test_rotation_phase_is_derived_from_nexus_and_the_cluster(
    rotation, next_exists, old_exists, on_old, phase, next_says
) -> None:
    status = credentials.rotation_status(parse(data(rotation)), next_exists, old_exists, on_old)
    assert status.phase == phase
    assert next_says in status.next
    assert status.line.startswith(f"phase {phase}: ") and "next: " in status.line
    row = status.change()
    assert (row.kind, row.action) == ("credential rotation", "unchanged") and row.write is None
    assert status.check().ok == (phase != "blocked")
    for reason in on_old or []:
        assert reason in status.line  # why some node may still use the old user


def test_retired_says_to_move_the_next_secret_id_too() -> None:
    status = credentials.rotation_status(parse(data("finish", mode="secrets-manager")), True, False, None)
    assert "next_credentials_secret_id to credentials_secret_id" in status.next


def test_stage4_view_before_the_apply_and_after_the_roll() -> None:
    p = parse(data("start"))
    assert credentials.node_rotation(parse(data(rotation=None)), ["default"]) is None
    before = credentials.node_rotation(p, ["default"])
    assert before.phase == "rolling" and "node class default does not carry docker-pull-2" in before.detail
    rolling = rollout.ClassProgress("default", new=["a"], new_ready=["a"], old=["b"])
    done = rollout.ClassProgress("default", new=["a", "c"], new_ready=["a", "c"])
    assert credentials.node_rotation(p, [], [rolling]).phase == "rolling"
    assert credentials.node_rotation(p, [], [done]).phase == "ready to retire"
    finish = parse(data("finish"))
    assert credentials.node_rotation(finish, [], [rolling]).phase == "blocked"
    assert credentials.node_rotation(finish, [], [done]).phase == "retiring"
    terminating = rollout.ClassProgress("default", new=["a"], new_ready=["a"], deleting=["b"])
    assert credentials.node_rotation(finish, [], [terminating]).phase == "blocked"  # still pulling
