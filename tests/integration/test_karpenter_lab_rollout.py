"""Stage 4 against the lab's Karpenter simulation with real lab nodes (the interface between the two halves).

The stage merges its part into the lab cluster's EC2NodeClass (which has a userData of its own), the
simulation drifts and replaces the nodes at the budget's pace, and the stage's watcher follows the roll to
the end. Every new lab node ran both the cluster's own part and ours, in its own mount namespace: its
/etc/containerd/certs.d holds our hosts.toml files. The boot probe is off here (the lab mirror endpoints are
not part of this fixture); the probe itself is tested in test_karpenter_userdata.py and, with real
containerd, in test_karpenter_node_containerd.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tomllib

import pytest

from runbook_lab import karpenter as k
from runbook_lib.containerd.hosts import ContainerdVersion
from runbook_lib.karpenter import nodes as stage
from runbook_lib.karpenter import userdata
from tests.lab.test_lab_karpenter import claims, moto, sim  # noqa: F401 - fixtures
from tests.support.karpenter import make_params, no_secret

pytestmark = pytest.mark.netns


def test_stage_rolls_the_lab_nodes_onto_the_mirror_config(sim) -> None:  # noqa: F811 - the imported fixture
    controller, standin, recorder = sim
    old = {c["metadata"]["name"] for c in claims(standin)}
    params = make_params(probe_mirror_at_boot=False, rollout_timeout_s=180, rollout_poll_s=1)
    api = controller.api
    rendered = stage.render(params, no_secret)
    version_line = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout
    node_containerd = ContainerdVersion.parse(version_line.split()[2])  # what the lab nodes run
    sp = stage.build_plan(params, api, True, rendered, no_secret)
    assert [c.label for c in sp.plan.pending] == ["update EC2NodeClass default"]
    base = stage.start_rollout(params, api, sp)
    sp.plan.apply()
    lines: list[str] = []
    progress = stage.run_rollout(params, api, base, apply=True, out=lines.append)

    assert progress[0].done and len(progress[0].new_ready) == 2 and not progress[0].old
    assert any("marked Drifted" in line and " 0 old" not in line for line in lines)  # it saw old nodes go
    current = claims(standin)
    assert not {c["metadata"]["name"] for c in current} & old
    assert recorder.deleting_at_once == 1  # paced by the pool's budget
    for claim in current:
        node = controller.nodes[claim["metadata"]["name"]]
        assert node.node_path("/etc/lab-node/cluster-user-data").read_text().startswith("node set up by")
        for f in rendered.files:
            text = node.node_path(f"/{userdata.CERTS_DIR}/{f.relative_path}").read_text()
            # the node's own containerd decided dial_timeout at boot (kept from 2.0.7, dropped below)
            assert text == dataclasses.replace(f, containerd=node_containerd).render()
            assert tomllib.loads(text)["server"] == f.server
    stored = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")
    assert userdata.remove(stored["spec"]["userData"]) == k.DEFAULT_USER_DATA

    again = stage.build_plan(params, api, True, rendered, no_secret)
    assert again.plan.pending == []
    assert stage.run_rollout(
        params, api, stage.start_rollout(params, api, again), apply=True, out=lambda line: None
    )[0].done
