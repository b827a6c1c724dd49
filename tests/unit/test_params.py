"""Parameters: the shipped files validate; bad input is reported per field, before any request."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from runbook_lib import params
from runbook_lib.cli import main

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "parameters" / "lab.yaml"
EXAMPLE = REPO / "parameters" / "eks-example.yaml"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def lab_data() -> dict:
    return yaml.safe_load(LAB.read_text())


@pytest.mark.parametrize("path", [LAB, EXAMPLE])
def test_shipped_parameter_files_are_valid(path: Path, capsys) -> None:
    assert main(["params", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "secret nexus.admin_password" in out


def test_example_covers_every_upstream_the_runbook_supports() -> None:
    p = params.load(EXAMPLE)
    assert {u.registry for u in p.upstreams} == {
        "docker.io",
        "gcr.io",
        "quay.io",
        "ghcr.io",
        "registry.k8s.io",
        "public.ecr.aws",
    }
    hub = p.upstream("docker.io")
    assert (hub.index_type, hub.group, hub.connector_port) == ("HUB", "docker", 8082)
    assert all(u.index_type == "REGISTRY" for u in p.upstreams if u.registry != "docker.io")


def test_lab_file_is_self_contained() -> None:
    p = params.load(LAB)
    assert p.lab is not None
    assert p.aws.endpoint_url and p.kubernetes.kubeconfig
    assert p.path(p.kubernetes.kubeconfig) == (REPO / ".lab" / "kubeconfig").resolve()


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda d: d["nexus"].update(colour="blue"), "nexus.colour", "unknown key"),
        (lambda d: d.update(extra_section={}), "extra_section", "unknown key"),
        (lambda d: d["verification"].update(repetitions="many"), "verification.repetitions", "integer"),
        (
            lambda d: d["nexus"].update(admin_password="hunter2hunter2"),
            "nexus.admin_password",
            "secret reference",
        ),
        (
            lambda d: d["nexus"].update(admin_password="vault:x"),
            "nexus.admin_password",
            "unknown secret scheme",
        ),
        (
            lambda d: d["security"].update(pull_password="k8s:Bad_NS/x"),
            "security.pull_password",
            "k8s reference",
        ),
        (lambda d: d["upstreams"][0].update(name="Docker-Hub"), "upstreams[0].name", "lowercase"),
        (
            lambda d: d["upstreams"][1].update(connector_port=18082),
            "upstreams[1].connector_port",
            "own endpoint",
        ),
        (lambda d: d["upstreams"][1].update(group="docker"), "upstreams[1].group", "wrong member"),
        (lambda d: d["karpenter"].update(ami_family="Windows"), "karpenter.ami_family", "AL2"),
        (lambda d: d["nexus"].update(url="nexus.local"), "nexus.url", "URL"),
    ],
)
def test_invalid_parameters_name_the_field(tmp_path, capsys, mutate, field, reason) -> None:
    data = lab_data()
    mutate(data)
    path = write(tmp_path, data)
    assert main(["params", "check", str(path)]) == 2
    out = capsys.readouterr().out
    problem_lines = [line for line in out.splitlines() if line.startswith(str(path))]
    assert any(f": {field}: " in line and reason in line for line in problem_lines), out


def test_several_problems_are_all_reported(tmp_path) -> None:
    data = lab_data()
    data["nexus"]["colour"] = "blue"
    data["verification"]["repetitions"] = 0
    with pytest.raises(params.ParamsError) as err:
        params.parse(data, "x.yaml")
    paths = {p for p, _ in err.value.problems}
    assert {"nexus.colour", "verification.repetitions"} <= paths


def test_invalid_yaml_reports_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("target: lab\nnexus: [\n")
    with pytest.raises(params.ParamsError) as err:
        params.load(path)
    assert "line" in err.value.problems[0][0]


def test_check_makes_no_network_request(tmp_path, monkeypatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("params check must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert main(["params", "check", str(EXAMPLE)]) == 0
    data = lab_data()
    data["nexus"]["admin_password"] = "plain"
    assert main(["params", "check", str(write(tmp_path, data))]) == 2


def test_schema_is_json_schema_with_sections(capsys) -> None:
    assert main(["params", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) >= {"target", "nexus", "upstreams"}
    assert schema["additionalProperties"] is False


def test_run_with_invalid_params_executes_nothing(tmp_path, capsys) -> None:
    data = lab_data()
    data["nexus"]["bogus"] = 1
    out_dir = tmp_path / "out"
    assert (
        main(["run", "preflight", "--params", str(write(tmp_path, data)), "--output-dir", str(out_dir)]) == 2
    )
    assert not out_dir.exists()
    assert "nothing was executed" in capsys.readouterr().err


def test_run_rejects_unknown_stage(capsys) -> None:
    assert main(["run", "deploy-everything", "--params", str(LAB)]) == 2
    assert "unknown stage" in capsys.readouterr().err


# -- edition, chart and the Community Edition caps (issue #12 part 5) ------------------------------------
def example_data() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_is_pro_on_nxrm_ha_and_lab_is_ce_on_one_replica() -> None:
    """nxrm-ha is the Pro HA chart (3 replicas by default); Community Edition runs one node (#581)."""
    ex, lab = params.load(EXAMPLE), params.load(LAB)
    assert (ex.nexus.expect_edition, ex.helm.flavour, ex.helm.effective_replicas) == ("PRO", "nxrm-ha", 3)
    assert (lab.nexus.expect_edition, lab.helm.flavour, lab.helm.effective_replicas) == (
        "COMMUNITY",
        "nxrm-ha",
        1,
    )


@pytest.mark.parametrize(
    ("edition", "flavour", "replicas", "refused"),
    [
        ("COMMUNITY", "nxrm-ha", None, True),  # the chart's default: three
        ("COMMUNITY", "nxrm-ha", 3, True),
        ("OSS", "nxrm-ha", 2, True),
        ("COMMUNITY", "nxrm-ha", 1, False),
        ("COMMUNITY", "nexus-repository-manager", None, False),  # one pod
        ("PRO", "nxrm-ha", None, False),
        (None, "nxrm-ha", None, False),  # edition not stated: nothing to hold it against
    ],
)
def test_community_edition_with_several_replicas_is_refused(
    tmp_path, capsys, edition, flavour, replicas, refused
) -> None:
    data = example_data()
    data["nexus"]["expect_edition"] = edition
    data["helm"]["flavour"] = flavour
    data["helm"].pop("replicas", None)
    if replicas is not None:
        data["helm"]["replicas"] = replicas
    path = write(tmp_path, data)
    assert main(["params", "check", str(path)]) == (2 if refused else 0)
    out = capsys.readouterr().out
    assert "Traceback" not in out
    problems = [line for line in out.splitlines() if line.startswith(f"{path}: helm.replicas: ")]
    assert bool(problems) is refused, out
    if refused:
        assert "sonatype/nexus-public#581" in problems[0] and "helm.replicas: 1" in problems[0]


def test_check_warns_when_expected_pulls_reach_the_ce_request_cap(tmp_path, capsys) -> None:
    """The example's 20,000 pulls/day on Community Edition: at 5+ requests a pull, the 100,000/day cap."""
    data = example_data()
    data["nexus"]["expect_edition"] = "COMMUNITY"
    data["helm"]["replicas"] = 1
    path = write(tmp_path, data)
    assert main(["params", "check", str(path)]) == 0  # valid: a warning, not a refusal
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if "warning verification.expected_pulls_per_day" in line]
    assert len(warning) == 1 and "100,000" in warning[0] and "Community Edition" in warning[0]
    # below the cap, on Pro, or with no figure: no warning
    for edition, pulls in (("COMMUNITY", 19_999), ("PRO", 20_000), ("COMMUNITY", None)):
        data["nexus"]["expect_edition"], data["verification"]["expected_pulls_per_day"] = edition, pulls
        assert params.advisories(params.parse(data, "x", tmp_path)) == [], (edition, pulls)
    data["verification"]["ce_requests_per_day"] = 50_000  # the cap is a parameter
    data["nexus"]["expect_edition"], data["verification"]["expected_pulls_per_day"] = "COMMUNITY", 10_000
    assert [f for f, _ in params.advisories(params.parse(data, "x", tmp_path))] == [
        "verification.expected_pulls_per_day"
    ]


def test_a_bare_off_for_anonymous_access_says_to_quote_it(tmp_path) -> None:
    """YAML 1.1 reads `off` as false: the error says so instead of 'Input should be keep or off'."""
    text = (REPO / "parameters" / "eks-example.yaml").read_text().replace('"off"', "off", 1)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(params.ParamsError, match=r'security\.anonymous_access: write "off" in quotes'):
        params.load(path)
