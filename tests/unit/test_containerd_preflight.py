"""Node containerd preflight on config.toml texts: config_path, legacy mirrors, the 2.1 transfer-service trap.

The configs are the shapes of the EKS AMI templates (awslabs/amazon-eks-ami) and containerd's defaults; one
case is also
checked against the real containerd 1.6 in the netns suite (test_karpenter_node_containerd.py)."""

from __future__ import annotations

import pytest

from runbook_lib.containerd.hosts import ContainerdVersion
from runbook_lib.containerd.preflight import check_config, check_nodeconfig_fragment, check_version
from runbook_lib.karpenter import nodes as stage
from runbook_lib.plan import Plan, StageFailed
from runbook_lib.stages import karpenter
from tests.support.karpenter import make_params
from tests.support.recording import RecordingContext

V = ContainerdVersion.parse
TWO_DIRS = '"/etc/containerd/certs.d:/etc/docker/certs.d"'
# AL2 / AL2023 with containerd 1.7 (templates/al2/runtime/containerd-config.toml,
# nodeadm/internal/containerd/config.template.toml): discard_unpacked_layers = true beside config_path
AL2_AMI = (
    'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndiscard_unpacked_layers = true\n'
    f'[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = {TWO_DIRS}\n'
)
AL2023_2X = (
    f'version = 3\n[plugins."io.containerd.cri.v1.images"]\ndiscard_unpacked_layers = true\n'
    f'[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = {TWO_DIRS}\n'
)


def by_name(checks) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_eks_ami_configs_pass() -> None:
    assert all(c.ok for c in check_config(AL2_AMI, V("1.7.29")))
    assert all(c.status == "ok" for c in check_config(AL2023_2X, V("2.2.4")))
    # a 1.7-era config on a node upgraded to 2.1+: discard_unpacked_layers keeps the local pull path
    assert all(c.status == "ok" for c in check_config(AL2_AMI, V("2.1.0")))


@pytest.mark.parametrize("version", [None, "1.7.29", "2.0.7", "2.1.0", "2.2.4"])
@pytest.mark.parametrize("family", ["AL2", "AL2023"])
def test_builtin_ami_configs_raise_no_transfer_service_warning(family, version) -> None:
    """The configs the preflight checks as "what the AMI ships" carry discard_unpacked_layers = true, like
    the awslabs/amazon-eks-ami templates: no false warning, whatever the containerd version."""
    v = V(version) if version else None
    model = stage.ami_config_model(family, v)
    assert model == f"{family}-{'1.7' if version == '1.7.29' else '2.x'}"  # unknown: 2.x
    text = stage.AMI_CONFIGS[model]
    assert "discard_unpacked_layers = true" in text
    assert [(c.name, c.status) for c in check_config(text, v) if c.status != "ok"] == []


def test_config_path_missing_or_elsewhere_fails() -> None:
    default = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = ""\n'
    assert by_name(check_config(default, V("1.7.2")))["config_path set"] == "fail"
    other = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/etc/docker/certs.d"\n'
    )
    checks = check_config(other, V("1.7.2"))
    assert by_name(checks)["config_path set"] == "fail"
    assert "/etc/containerd/certs.d" in next(c.detail for c in checks if c.name == "config_path set")


def test_legacy_mirrors_beside_config_path_fail() -> None:
    text = (
        AL2_AMI
        + '[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://m"]\n'
    )
    checks = check_config(text, V("1.6.20"))
    assert by_name(checks)["no legacy registry.mirrors beside config_path"] == "fail"
    assert "cannot be set when `config_path` is provided" in " ".join(c.detail for c in checks)


@pytest.mark.parametrize(
    ("extra", "version", "status"),
    [
        ("", "2.1.0", "fail"),  # two folders, transfer service: hosts.toml never found
        ("", "2.2.4", "fail"),
        ("", "2.0.7", "ok"),  # before 2.1 CRI pulls never use the transfer service
        ("", "1.7.29", "ok"),
        ("", None, "fail"),  # unknown: taken as 2.x, what current EKS AMIs ship
        ('[plugins."io.containerd.cri.v1.images"]\ndiscard_unpacked_layers = true\n', "2.2.4", "ok"),
        ('[plugins."io.containerd.cri.v1.images"]\nuse_local_image_pull = true\n', "2.2.4", "ok"),
        ('[plugins."io.containerd.cri.v1.images"]\ndiscard_unpacked_layers = false\n', "2.2.4", "fail"),
    ],
)
def test_transfer_service_trap(extra, version, status) -> None:
    text = f'version = 3\n{extra}[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = {TWO_DIRS}\n'
    checks = check_config(text, V(version) if version else None)
    assert by_name(checks)["containerd >= 2.1 transfer service finds hosts.toml"] == status


def test_single_folder_config_path_is_safe_on_21() -> None:
    text = (
        'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
    )
    assert all(c.status == "ok" for c in check_config(text, V("2.2.4")))


def test_invalid_toml_fails() -> None:
    assert [c.status for c in check_config("[plugins\n", V("1.7.0"))] == ["fail"]


def test_version_facts() -> None:
    unknown = check_version(None)[0]
    assert unknown.status == "skipped" and "taken as 2.x" in unknown.detail
    detail = check_version(V("1.6.6"))[0].detail
    assert "no certs.d/_default" in detail and "empty [host]" in detail
    assert "empty [host]" in check_version(V("1.7.29"))[0].detail  # every 1.x (containerd#10027)
    assert "empty [host]" not in check_version(V("2.0.0"))[0].detail
    assert "dial_timeout written" in check_version(V("2.1.4"))[0].detail


def test_unknown_version_is_taken_as_2x_and_says_so() -> None:
    text = f'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = {TWO_DIRS}\n'
    check = next(c for c in check_config(text, None) if c.name.startswith("containerd >= 2.1"))
    assert check.status == "fail" and "taken as 2.x" in check.detail
    assert "karpenter.containerd_version" in check.detail


def test_user_nodeconfig_that_turns_the_transfer_service_on_is_caught() -> None:
    fragment = '[plugins."io.containerd.cri.v1.images"]\ndiscard_unpacked_layers = false\n'
    assert [c.status for c in check_nodeconfig_fragment(fragment, V("2.2.4"), "nc")] == ["fail"]
    assert [c.status for c in check_nodeconfig_fragment(fragment, V("1.7.29"), "nc")] == ["ok"]
    unknown = check_nodeconfig_fragment(fragment, None, "nc")  # taken as 2.x
    assert [c.status for c in unknown] == ["fail"] and "taken as 2.x" in unknown[0].detail
    legacy = '[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://m"]\n'
    assert "fail" in [c.status for c in check_nodeconfig_fragment(legacy, None, "nc")]


def test_stage_preflight_reads_the_node_config_file_and_user_nodeconfig(tmp_path) -> None:
    from runbook_lib.karpenter import userdata
    from runbook_lib.karpenter.nodeclass import KINDS, NodeClassState

    (tmp_path / "node.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = ""\n'
    )
    params = make_params(containerd_version="2.2.4", node_containerd_config=str(tmp_path / "node.toml"))
    rendered = stage.render(params, lambda ref, user=None: "x")
    nodeconfig = (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n--B\n'
        "Content-Type: application/node.eks.aws\n\n"
        "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  containerd:\n    config: |\n"
        '      [plugins."io.containerd.cri.v1.images"]\n      discard_unpacked_layers = false\n--B--\n'
    )
    state = NodeClassState("default", KINDS["v1"], {"metadata": {"name": "default"}}, current=nodeconfig)
    checks = stage.node_preflight(params, [state], rendered)
    statuses = by_name(checks)
    assert statuses["node.toml: config_path set"] == "fail"
    assert statuses["node class default: discard_unpacked_layers kept"] == "fail"
    assert statuses["EKS AL2023-2.x AMI config: containerd >= 2.1 transfer service finds hosts.toml"] == "ok"
    # The stage refuses to apply while a node preflight check fails, before it writes anything.
    staged = karpenter.State(rendered, stage.StagePlan(Plan("karpenter", True), [state], []), checks)
    ctx = RecordingContext(apply=True, params=params)
    with pytest.raises(StageFailed, match="node preflight failed"):
        karpenter.apply(ctx, staged, staged.staged.plan)
    assert ctx.records["failure"]["step"] == "node preflight"
    assert userdata.parts(nodeconfig)[0]["content_type"] == "application/node.eks.aws"


def test_stage_preflight_without_a_node_config_skips_with_the_reason() -> None:
    params = make_params()
    checks = stage.node_preflight(params, [], stage.render(params, lambda ref, user=None: "x"))
    skipped = [c for c in checks if c.status == "skipped"]
    assert any("containerd config dump" in c.detail for c in skipped)
    assert all(c.ok for c in checks)
    # containerd version unknown: the AMI's 2.x config is checked, and it raises no warning
    ami = {c.name: c.status for c in checks if c.name.startswith("EKS ")}
    assert ami and all(name.startswith("EKS AL2023-2.x AMI config") for name in ami)
    assert set(ami.values()) == {"ok"}


def test_stage_preflight_fails_when_nexus_needs_credentials_nodes_do_not_send() -> None:
    params = make_params(security={"mode": "authenticated", "pull_password": "env:X"})
    checks = stage.node_preflight(params, [], stage.render(params, lambda ref, user=None: "x"))
    assert by_name(checks)["node credentials match Nexus access"] == "fail"
