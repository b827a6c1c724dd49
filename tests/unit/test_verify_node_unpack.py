"""Node samples keep the unpack apart: the kubelet's Pulled event may carry the unpack part of the pull
(the lab's nodes add it from containerd's "diff applied" timings); verify then measures the transfer.

The Pods and Events go through the Kubernetes API stand-in with the official client; a small responder
plays the kubelet and posts the Pulled event, with or without the annotation.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lab.kubelet import UNPACK_ANNOTATION as LAB_ANNOTATION
from runbook_lab.node import UnpackMeter, unpack_seconds
from runbook_lib.verify import nodepull, samples

NS = "default"


class Responder:
    """Posts `Pulled` for every Pod bound to a node: `unpack` is the annotation's value (None: none)."""

    def __init__(self, standin: KubeStandIn, kubeconfig: Path, message: str, unpack: str | None) -> None:
        self.api = kube_config.new_client_from_config(config_file=str(kubeconfig))
        self.core = k8s.CoreV1Api(self.api)
        self.message, self.unpack = message, unpack
        self.threads: list[threading.Thread] = []
        self.unsubscribe = standin.on_change(self._on_change)

    def _on_change(self, event: str, obj: dict[str, Any]) -> None:
        if event == "ADDED" and obj.get("kind") == "Pod" and obj["spec"].get("nodeName"):
            t = threading.Thread(target=self._pulled, args=(obj,), daemon=True)
            self.threads.append(t)
            t.start()

    def _pulled(self, pod: dict[str, Any]) -> None:
        meta, now = pod["metadata"], datetime.now(UTC)
        event_meta: dict[str, Any] = {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": NS}
        if self.unpack is not None:
            event_meta["annotations"] = {nodepull.UNPACK_ANNOTATION: self.unpack}
        image = pod["spec"]["containers"][0]["image"]
        self.core.create_namespaced_event(
            NS,
            {
                "metadata": event_meta,
                "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": NS, "uid": meta["uid"]},
                "reason": "Pulled",
                "message": self.message.format(image=image),
                "type": "Normal",
                "firstTimestamp": now,
                "lastTimestamp": now,
            },
        )

    def close(self) -> None:
        self.unsubscribe()
        for t in self.threads:
            t.join(timeout=10)
        self.api.close()


@pytest.fixture
def kube(tmp_path: Path):
    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", standin.url)
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    yield standin, kubeconfig, k8s.CoreV1Api(api)
    api.close()
    standin.stop()


MESSAGE = 'Successfully pulled image "{image}" in 2.5s (2.6s including waiting). Image size: 52428800 bytes.'


@pytest.mark.parametrize(
    ("unpack", "expected_unpack", "expected_transfer"),
    [("0.5000", 0.5, 2.0), (None, None, 2.5), ("not-a-number", None, 2.5), ("3.0", 3.0, 2.5)],
)
def test_run_pod_reads_the_unpack_and_the_transfer_is_the_pull_without_it(
    kube, unpack, expected_unpack, expected_transfer
) -> None:
    standin, kubeconfig, core = kube
    responder = Responder(standin, kubeconfig, MESSAGE, unpack)
    try:
        pulled = nodepull.run_pod(core, NS, "n-a", "docker.io/library/big:lab", 10, poll_s=0.05)
    finally:
        responder.close()
    assert pulled.ok and pulled.seconds == 2.5
    assert pulled.unpack_seconds == expected_unpack
    # an unpack as long as the whole pull cannot be right: the pull time is kept as it is
    assert pulled.transfer_seconds == pytest.approx(expected_transfer)


def test_the_lab_and_the_runbook_name_the_same_annotation() -> None:
    assert LAB_ANNOTATION == nodepull.UNPACK_ANNOTATION


def test_speedups_use_the_transfer_and_the_summary_shows_the_unpack() -> None:
    def row(label: str, rep: int, pull_s: float, unpack_s: float | None) -> dict[str, Any]:
        p = nodepull.PodPull("p", "n", "big", True, seconds=pull_s, unpack_seconds=unpack_s)
        return {
            "scope": "node",
            "image": "big",
            "label": label,
            "rep": rep,
            "ok": True,
            "eligible": True,
            "seconds": p.transfer_seconds,
            "pull_s": pull_s,
            "unpack_s": unpack_s,
        }

    rows = [row(samples.DIRECT, r, 2.9, 0.2) for r in (1, 2, 3)]
    rows += [row(samples.MIRROR_WARM, r, 0.5, 0.3) for r in (1, 2, 3)]
    df = samples.frame(rows)
    # transfer 2.7 s vs 0.2 s; the whole pulls alone would give 2.9 / 0.5
    assert samples.speedup(df) == pytest.approx(13.5)
    summary = samples.summarize(df).set_index("label")
    assert summary.loc[samples.DIRECT, "median_unpack_s"] == pytest.approx(0.2)
    assert summary.loc[samples.MIRROR_WARM, "median_s"] == pytest.approx(0.2)
    host = samples.summarize(samples.frame([{**rows[0], "unpack_s": None, "pull_s": None}]))
    assert pd.isna(host.loc[0, "median_unpack_s"])  # no unpack reported: nothing made up


def test_unpack_meter_sums_containerd_diff_applied_lines_after_the_mark(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"

    def line(d: str) -> str:
        return (
            f'time="2026-12-03T17:35:30.1Z" level=debug msg="diff applied" d={d} '
            'digest="sha256:00" media=application/vnd.oci.image.layer.v1.tar+gzip size=52494336\n'
        )

    log.write_text(line("1.5s") + 'time="x" level=info msg="something else d=9s"\n')
    meter = UnpackMeter(log)
    mark = meter.mark()
    assert meter.since(mark) is None  # nothing applied yet: nothing to report
    with open(log, "a") as fh:
        fh.write(line("137.25ms") + line("850µs") + line("1m2.5s"))
    assert meter.since(mark) == pytest.approx(0.13725 + 0.00085 + 62.5)
    assert unpack_seconds(log.read_text()) == (pytest.approx(1.5 + 0.13725 + 0.00085 + 62.5), 4)
    assert UnpackMeter(tmp_path / "missing.log").since(0) is None


def test_the_chart_says_when_its_times_leave_the_unpack_out() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runbook_lib.verify import charts

    base = {"scope": "node", "image": "big", "label": samples.DIRECT, "rep": 1, "ok": True, "eligible": True}
    for unpack, label in ((0.2, "pull time (s), without the unpack"), (None, "pull time (s)")):
        df = samples.frame([{**base, "seconds": 2.7 if unpack else 2.9, "pull_s": 2.9, "unpack_s": unpack}])
        fig, ax = plt.subplots()
        charts._spread_panel(ax, df, [(samples.DIRECT, df)])
        assert ax.get_ylabel() == label
        plt.close(fig)
