"""(issue #15) Verification from the runbook host: 50 images x 3 routes with bounded concurrency
(``verification.concurrency`` 4, the default) against the same pulls one at a time (concurrency 1).

Set-up, each part its own process as in ``runbook lab up``: a Debian docker-registry (CNCF distribution)
holding 50 small images, the lab's Docker Hub stand-in in front of it (the lab's 20 MB/s per response,
no rate limit so the bench's 400 pulls are not refused), and a fresh Nexus emulator per measured run,
configured by stages 1-2 (docker.io proxy on its own connector port, the ``mirror_url`` route).

One measured run is ``hostpull.compare`` over the 50 images with repetitions 2, i.e. per image the three
routes: direct from the Docker Hub stand-in (2 pulls), mirror cold (Nexus fetches from the stand-in while
serving, 1 pull), mirror warm (from Nexus's cache, 1 pull): 200 pulls. A run starts with Nexus empty, so
both modes pull the same cold and warm samples; runs alternate (serial, concurrent, concurrent, serial)
so a burst of load from another process hits both alike.

Why 2 MiB layers: concurrency overlaps waiting (the stand-in's bandwidth, in production the distance to
Docker Hub), not CPU. With 256 KiB layers a run is CPU-bound on 2 shared cores (a fresh client costs about
33 ms of CPU, mostly httpx loading the CA bundle into a new SSL context: 200 clients, about 6.6 s), and
4 at once measured 0.95 of the serial time.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import PY, REPO, Figure, median, ratio
from runbook_lab.processes import unused_port

N_IMAGES = 50
REPETITIONS = 2  # per image: 2 direct, 1 mirror cold, 1 mirror warm
LAYER_BYTES = 2 << 20  # one seeded random layer per image, plus a small file layer and the config
CONCURRENCY = 4
ROUNDS = ("serial", "concurrent", "concurrent", "serial")
HUB_BYTES_PER_S = 20_000_000  # parameters/lab.yaml's lab.dockerhub.throttle_bytes_per_s
TARGET = 0.5
ADMIN_ENV, PULL_ENV = "BENCH_VERIFY_NEXUS_ADMIN", "BENCH_VERIFY_PULL_PASSWORD"


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


class _StageContext:
    """What stages 1-2 need of the notebook's context (runbook_lib.notebook.StageContext)."""

    def __init__(self, params: Any, run_dir: Path) -> None:
        self.params = params
        self.apply = True
        self.api_client = None
        self.run_dir = run_dir
        self.records: dict[str, list[Any]] = {}

    def secret(self, ref: str, user: str | None = None) -> str:
        from runbook_lib.secrets import resolve

        return resolve(ref, None, user)

    resolve = secret

    def record(self, key: str, value: Any) -> None:
        self.records.setdefault(key, []).append(value)


def seed(registry_url: str, work: Path) -> list[str]:
    from runbook_lab.images import build_image, push

    images = []
    for i in range(N_IMAGES):
        name = f"bench/verify{i:02d}"
        image = build_image(
            {f"etc/verify{i}.conf": b"image %d\n" % i},
            workdir=work / "img",
            random_layer_bytes=[LAYER_BYTES],
            seed=f"{name}:1",
        )
        push(image, registry_url, name, "1")
        images.append(f"docker.io/{name}:1")
    return images


def lab_params(nexus_url: str, hub_url: str, connector_port: int, data_dir: Path, images: list[str]) -> Any:
    from runbook_lib import params as params_mod

    data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
    data["nexus"].update(
        url=nexus_url,
        admin_password=f"env:{ADMIN_ENV}",
        initial_password_file=str(data_dir / "admin.password"),
    )
    data["upstreams"] = [
        {
            "name": "docker-hub",
            "registry": "docker.io",
            "remote_url": hub_url,
            "connector_port": connector_port,
            "mirror_url": f"http://127.0.0.1:{connector_port}",
        }
    ]
    data["security"] = {"mode": "anonymous", "pull_password": f"env:{PULL_ENV}"}
    data["verification"] = {"images": images, "repetitions": REPETITIONS}
    return params_mod.parse(data, "bench", REPO / "parameters")


def one_run(work: Path, name: str, hub_url: str, images: list[str], concurrency: int) -> dict[str, Any]:
    """A fresh Nexus emulator configured by stages 1-2, then one timed comparison over every image."""
    from runbook_lab.registries import stop_process
    from runbook_lib.stages import nexus_repos, nexus_security
    from runbook_lib.verify import hostpull, mirrorproof, samples

    data_dir = work / name / "nexus"
    data_dir.mkdir(parents=True)
    port, connector = unused_port(), unused_port()
    nexus = spawn(
        [PY, "-m", "runbook_lab.nexus", "--data-dir", str(data_dir), "--port", str(port)],
        work / name / "nexus.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/service/rest/v1/status", nexus)
        params = lab_params(f"http://127.0.0.1:{port}", hub_url, connector, data_dir, images)
        ctx = _StageContext(params, work / name)
        for stage in (nexus_repos, nexus_security):
            state = stage.read(ctx)
            stage.apply(ctx, state, stage.plan(ctx, state))
        params.verification.concurrency = concurrency
        content = mirrorproof.NexusContent.connect(params, ctx.secret)
        if content.client is None:
            raise RuntimeError(content.problem)
        start = time.perf_counter()
        host = hostpull.compare(params, ctx.secret, content)
        seconds = time.perf_counter() - start
        content.client.close()
    finally:
        stop_process(nexus)
    df = host.samples
    if not df["ok"].all():
        raise RuntimeError(f"{name}: failed pulls: {df[~df['ok']][['pulled', 'error']].head().to_dict()}")
    labels = df.groupby("label").size().to_dict()
    expected = {
        samples.DIRECT: N_IMAGES * REPETITIONS,
        samples.MIRROR_COLD: N_IMAGES,
        samples.MIRROR_WARM: N_IMAGES * (REPETITIONS - 1),
    }
    if labels != expected:
        raise RuntimeError(f"{name}: labels {labels}, expected {expected}")
    medians = {label: round(float(g["seconds"].median()), 4) for label, g in df.groupby("label")}
    return {"seconds": seconds, "pulls": len(df), "bytes": int(df["bytes"].sum()), "medians": medians}


def measure(work: Path) -> list[Figure]:
    from runbook_lab.registries import start_registry, stop_process

    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(ADMIN_ENV, "bench-admin-secret")
    os.environ.setdefault(PULL_ENV, "bench-pull-secret")
    reg = start_registry("docker.io", work / "registry", 0, work / "registry.log")
    hub_port, token_port = unused_port(), unused_port()
    hub = None
    try:
        images = seed(reg.url, work)
        hub = spawn(
            [PY, "-m", "runbook_lab.dockerhub", "--port", str(hub_port), "--token-port", str(token_port)]
            + ["--backend", reg.url, "--limit", "-1", "--auth-limit", "-1"]
            + ["--throttle-bytes-per-s", str(HUB_BYTES_PER_S)],
            work / "dockerhub.log",
        )
        hub_url = f"http://127.0.0.1:{hub_port}"
        wait_http(f"{hub_url}/_lab/state", hub)
        runs: dict[str, list[dict[str, Any]]] = {"serial": [], "concurrent": []}
        for i, mode in enumerate(ROUNDS):
            concurrency = 1 if mode == "serial" else CONCURRENCY
            runs[mode].append(one_run(work, f"run{i}-{mode}", hub_url, images, concurrency))
    finally:
        if hub is not None:
            stop_process(hub)
        stop_process(reg)
    serial = median([r["seconds"] for r in runs["serial"]])
    concurrent = median([r["seconds"] for r in runs["concurrent"]])
    fig = Figure(
        f"verification {N_IMAGES} images x 3 routes, bounded concurrency",
        "s",
        concurrent,
        serial,
        "the same pulls one at a time, verification.concurrency 1 (s)",
        f"ratio <= {TARGET:g}",
        None,
        samples={mode: [round(r["seconds"], 4) for r in rs] for mode, rs in runs.items()},
        details={
            "routes": {
                "direct": f"from the Docker Hub stand-in (20 MB/s per response), {REPETITIONS} per image",
                "mirror-cold": "through an empty Nexus emulator fetching from the stand-in, 1 per image",
                "mirror-warm": f"through Nexus from its cache, {REPETITIONS - 1} per image",
            },
            "images": N_IMAGES,
            "image_bytes": f"config + a small file layer + one {LAYER_BYTES >> 20} MiB layer",
            "pulls_per_run": runs["serial"][0]["pulls"],
            "bytes_per_run": runs["serial"][0]["bytes"],
            "concurrency": CONCURRENCY,
            "max_parallel_layers": 4,
            "rounds": list(ROUNDS),
            "median_pull_s": {mode: rs[0]["medians"] for mode, rs in runs.items()},
            "set_up": "docker-registry + lab Docker Hub stand-in + Nexus emulator, each its own process; "
            "a fresh emulator configured by stages 1-2 for every run",
        },
    )
    fig.ratio = ratio(concurrent, serial)
    fig.met = fig.ratio is not None and fig.ratio <= TARGET
    if not fig.met:
        fig.explanation = (
            f"{CONCURRENCY} pulls at once took {fig.ratio} of the serial time on a shared 2-core machine "
            "(client, stand-in and emulator compete for the same cores)"
        )
    return [fig]


if __name__ == "__main__":
    import json
    import tempfile

    from bench.common import with_load

    figures = with_load(lambda: measure(Path(tempfile.mkdtemp(prefix="eks-mirror-verify-bench-"))))
    print(json.dumps([f.to_json() for f in figures], indent=2))
