"""(b) The pull engine against `skopeo copy` and against parallel `curl` of the same blobs, on a 256 MiB
4-layer image in a local Debian docker-registry; and the runbook's peak RSS pulling a 1 GiB image.

Each tool gets the same registry, the same image and the same repetitions, interleaved (engine, skopeo,
curl, engine, ...) so a burst of load from another process hits all three alike. Every tool checks
digests: the engine while streaming, skopeo itself, curl through `sha256sum` per blob.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, Figure, median, ratio

REPETITIONS = 5
REPO_NAME = "bench/layers"
TAG = "256"
BIG_REPO, BIG_TAG = "bench/big", "1g"
RSS_TARGET_MIB = 200.0


def _split(total_mib: int, parts: int) -> list[int]:
    total = total_mib << 20
    sizes = [total // parts] * parts
    sizes[-1] += total - sum(sizes)
    return sizes


class Registry:
    """A Debian docker-registry on a free loopback port, seeded with the bench images."""

    def __init__(self, work: Path) -> None:
        from runbook_lab.registries import start_registry

        self.work = work
        self.proc = start_registry("bench", work / "registry", 0, work / "registry.log")
        self.url = self.proc.url

    def seed(self, repository: str, tag: str, layer_bytes: list[int], seed: str) -> dict[str, Any]:
        from runbook_lab.images import build_image, push

        image = build_image(
            {"etc/bench.conf": b"bench\n"},
            workdir=self.work / "img",
            random_layer_bytes=layer_bytes,
            seed=seed,
        )
        push(image, self.url, repository, tag)
        return {"digest": image.digest, "bytes": sum(b.size for b in image.blobs), "blobs": len(image.blobs)}

    def stop(self) -> None:
        from runbook_lab.registries import stop_process

        stop_process(self.proc)


def engine_pull(url: str, repository: str, tag: str) -> float:
    from runbook_lib.registry.client import RegistryClient
    from runbook_lib.registry.pull import pull

    with RegistryClient(url) as client:
        result = pull(client, repository, tag)
    if not result.ok:
        raise RuntimeError(f"engine pull failed: {result.error}")
    return float(result.total_s or 0.0)


def skopeo_pull(url: str, repository: str, tag: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    host = url.removeprefix("http://")
    argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    argv += [f"docker://{host}/{repository}:{tag}", f"dir:{dest}"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy failed: {done.stderr.strip()[:300]}")
    return elapsed


def curl_pull(url: str, repository: str, tag: str) -> float:
    """Manifest with curl, then every blob at once, each piped through sha256sum and compared."""
    accept = "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
    start = time.perf_counter()
    manifest = subprocess.run(
        ["curl", "-sf", "-H", f"Accept: {accept}", f"{url}/v2/{repository}/manifests/{tag}"],
        capture_output=True,
        check=True,
    ).stdout
    doc = json.loads(manifest)
    digests = [doc["config"]["digest"]] + [d["digest"] for d in doc["layers"]]

    def one(digest: str) -> bool:
        out = subprocess.run(
            ["sh", "-c", 'curl -sfL "$1" | sha256sum', "sh", f"{url}/v2/{repository}/blobs/{digest}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return "sha256:" + out.split()[0] == digest

    with ThreadPoolExecutor(max_workers=len(digests)) as pool:
        ok = list(pool.map(one, digests))
    elapsed = time.perf_counter() - start
    if not all(ok):
        raise RuntimeError("curl: a blob did not match its digest")
    return elapsed


_RSS_PROBE = """
import json, sys
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
from runbook_lib.registry.client import RegistryClient
from runbook_lib.registry.pull import pull
before = hwm()
with RegistryClient(sys.argv[1]) as c:
    r = pull(c, sys.argv[2], sys.argv[3])
print(json.dumps({"ok": r.ok, "bytes": r.bytes, "total_s": r.total_s, "hwm_before_mib": before,
                  "hwm_mib": hwm(), "error": r.error}))
"""


def rss_probe(url: str, repository: str, tag: str) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-c", _RSS_PROBE, url, repository, tag], capture_output=True, text=True, cwd=REPO, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"rss probe failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def measure(work: Path) -> list[Figure]:
    work.mkdir(parents=True, exist_ok=True)
    reg = Registry(work)
    try:
        image = reg.seed(REPO_NAME, TAG, _split(256, 4), "bench/layers:256")  # bytes per layer
        dest = Path("/dev/shm") / f"bench-skopeo-{time.time_ns()}"
        engine_pull(reg.url, REPO_NAME, TAG)  # warm the registry's page cache for everyone
        samples: dict[str, list[float]] = {"engine": [], "skopeo": [], "curl": []}
        for _ in range(REPETITIONS):
            samples["engine"].append(engine_pull(reg.url, REPO_NAME, TAG))
            samples["skopeo"].append(skopeo_pull(reg.url, REPO_NAME, TAG, dest))
            samples["curl"].append(curl_pull(reg.url, REPO_NAME, TAG))
        eng, sko, cur = (median(samples[k]) for k in ("engine", "skopeo", "curl"))
        mb = image["bytes"] / 1e6
        common = {"image_bytes": image["bytes"], "blobs": image["blobs"], "repetitions": REPETITIONS}
        vs_skopeo = Figure(
            "pull engine vs skopeo copy (256 MiB, 4 layers)",
            "speed ratio (skopeo s / engine s)",
            round(mb / eng, 1),
            round(mb / sko, 1),
            "skopeo copy to dir: on tmpfs (MB/s)",
            "ratio >= 1",
            None,
            samples={k: [round(x, 4) for x in v] for k, v in samples.items()},
            details={**common, "engine_s": eng, "skopeo_s": sko, "value_unit": "MB/s"},
        )
        vs_skopeo.ratio = ratio(sko, eng)
        vs_skopeo.met = vs_skopeo.ratio is not None and vs_skopeo.ratio >= 1.0
        vs_curl = Figure(
            "pull engine vs parallel curl + sha256sum (the practical limit)",
            "speed ratio (curl s / engine s)",
            round(mb / eng, 1),
            round(mb / cur, 1),
            "one curl per blob, all at once, each through sha256sum (MB/s)",
            "ratio >= 0.8",
            None,
            details={**common, "engine_s": eng, "curl_s": cur, "value_unit": "MB/s"},
        )
        vs_curl.ratio = ratio(cur, eng)
        vs_curl.met = vs_curl.ratio is not None and vs_curl.ratio >= 0.8
        big = reg.seed(BIG_REPO, BIG_TAG, [1024 << 20], "bench/big:1g")
        probe = rss_probe(reg.url, BIG_REPO, BIG_TAG)
        if not probe["ok"]:
            raise RuntimeError(f"1 GiB pull failed: {probe['error']}")
        rss = Figure(
            "peak RSS of the runbook pulling a 1 GiB image",
            "MiB",
            round(probe["hwm_mib"], 1),
            round(probe["hwm_before_mib"], 1),
            "the same process after its imports, before the pull (MiB)",
            f"value < {RSS_TARGET_MIB:g} MiB",
            probe["hwm_mib"] < RSS_TARGET_MIB,
            ratio=round(probe["hwm_mib"] / RSS_TARGET_MIB, 3),
            details={"image_bytes": big["bytes"], "pull_s": round(probe["total_s"], 3), "ratio_of": "target"},
        )
        return [vs_skopeo, vs_curl, rss]
    finally:
        reg.stop()
