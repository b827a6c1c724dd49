"""The Containerfile builds with Debian's buildah (vfs storage, chroot isolation, no daemon) and runs.

No registry for base images is reachable here, so the base is made from Debian packages with mmdebstrap
(trixie: python3 3.13 with venv; bookworm's 3.11.2 is older than the lock allows, soupsieve needs >= 3.11.5)
and committed into buildah's storage from scratch. pip in the build gets no network: the wheels of
requirements.lock are downloaded on the host first (PyPI is reachable from the host, for cp313) into a
wheelhouse, and the build installs with --no-index --find-links. The base tarball and the wheelhouse are
cached under .cache/container/ (gitignored), keyed by their inputs. The build takes about 4 min on 2 cores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "container"
SUITE = "trixie"
PACKAGES = "python3,python3-venv,ca-certificates,passwd"
CONTEXT_FILES = ["pyproject.toml", "requirements.lock", "README.md", "runbook_lib", ".containerignore"]


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root: buildah's vfs storage and chroot isolation need CAP_SYS_ADMIN/CAP_SYS_CHROOT"
    for tool in ("buildah", "mmdebstrap"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/system-packages.sh installs it as root)"
    return None


pytestmark = pytest.mark.skipif(bool(_problem()), reason=_problem() or "")


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def base_tarball() -> Path:
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:16]
    path = CACHE / f"base-{SUITE}-{key}.tar"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # needs the Debian mirror; a failure here names the step
        res = subprocess.run(
            ["mmdebstrap", "--variant=apt", f"--include={PACKAGES}", "--format=tar", SUITE, str(tmp)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if res.returncode != 0:
            pytest.skip(f"mmdebstrap cannot reach a Debian mirror to make the base: {res.stderr[-400:]}")
        tmp.rename(path)
    return path


def wheelhouse() -> Path:
    key = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:16]
    path = CACHE / f"wheelhouse-cp313-{key}"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        res = subprocess.run(
            [
                *(str(REPO / ".venv/bin/python"), "-m", "pip", "download", "-q", "--only-binary=:all:"),
                *("--python-version", "3.13", "--implementation", "cp", "--abi", "cp313"),
                *("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64"),
                *("--platform", "manylinux2014_x86_64", "--platform", "any"),
                *("-r", str(REPO / "requirements.lock"), "-d", str(tmp)),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if res.returncode != 0:
            pytest.skip(
                f"the PyPI index is not reachable from here to fill the wheelhouse: {res.stderr[-400:]}"
            )
        tmp.rename(path)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("image")
    store = ["--storage-driver", "vfs", "--root", str(tmp / "root"), "--runroot", str(tmp / "run")]
    container = run("buildah", *store, "from", "scratch").stdout.strip()
    mount = run("buildah", *store, "mount", container).stdout.strip()
    run("tar", "-xf", str(base_tarball()), "-C", mount)
    run("buildah", *store, "umount", container)
    run("buildah", *store, "commit", "-q", container, "localhost/runbook-base:test")
    run("buildah", *store, "rm", container)

    context = tmp / "context"
    context.mkdir()
    for name in CONTEXT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, context / name)
    shutil.copytree(wheelhouse(), context / "wheelhouse")
    run(
        *("buildah", *store, "build", "--isolation", "chroot", "-f", str(REPO / "Containerfile")),
        *("--build-arg", "BASE=localhost/runbook-base:test"),
        *("--build-arg", "PIP_ARGS=--no-index --find-links /src/wheelhouse"),
        *("-t", "localhost/eks-mirror-runbook:test", str(context)),
        timeout=1500,
    )
    container = run("buildah", *store, "from", "localhost/eks-mirror-runbook:test").stdout.strip()
    yield store, container
    subprocess.run(["buildah", *store, "rm", container], capture_output=True)
    shutil.rmtree(tmp / "root", ignore_errors=True)


def in_image(image, *cmd: str, volume: Path | None = None, env: dict[str, str] | None = None):
    store, container = image
    extra = ["-v", f"{volume}:/etc/runbook"] if volume else []
    for k, v in (env or {}).items():
        extra += ["--env", f"{k}={v}"]
    # chroot isolation shares the host's network: the lab's loopback ports are reachable
    return subprocess.run(
        ["buildah", *store, "run", "--isolation", "chroot", *extra, container, "--", *cmd],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_image_is_non_root_without_the_lab_and_carries_the_notebooks(image) -> None:
    """uid 10001; neither the lab nor the lab's or the tests' packages (moto, grpcio, pytest, playwright)."""
    res = in_image(
        image,
        "python3",
        "-c",
        "import os, importlib.util as u, runbook_lib, pathlib;"
        "absent = ('runbook_lab', 'moto', 'grpc', 'pytest', 'playwright', 'ruff');"
        "print(os.getuid(), all(u.find_spec(m) is None for m in absent),"
        " sorted(p.name for p in (pathlib.Path(runbook_lib.__file__).parent / 'notebooks')"
        ".glob('*.ipynb'))[0])",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["10001", "True", "00_preflight.ipynb"]


def test_params_check_in_the_image(image, tmp_path: Path) -> None:
    configmap = yaml.safe_load((REPO / "deploy/base/configmap.yaml").read_text())
    (tmp_path / "params.yaml").write_text(configmap["data"]["params.yaml"])
    os.chmod(tmp_path, 0o755)  # the image runs as uid 10001; pytest's tmp folders are 0700
    res = in_image(image, "runbook", "params", "check", "/etc/runbook/params.yaml", volume=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "target my-cluster" in res.stdout and "aws-sm reference" in res.stdout


def test_plan_only_stage_in_the_image(image, nexus, kubeconfig: Path, tmp_path: Path) -> None:
    """nexus-repos in plan mode against the lab's Nexus emulator on loopback: reads only, plan written."""
    params = {
        "target": "image-test",
        "nexus": {"url": nexus.url, "admin_password": "env:NEXUS_PW"},
        "upstreams": [{"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:1"}],
        "kubernetes": {"kubeconfig": "kubeconfig"},  # the stage connects to Kubernetes: the lab's stand-in
        "aws": {"required": False},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert kubeconfig == tmp_path / "kubeconfig"  # the fixture writes it next to params.yaml
    os.chmod(kubeconfig, 0o644)
    with nexus.admin() as admin:
        before = admin.get("/v1/repositories").json()
    os.chmod(tmp_path, 0o777)  # uid 10001 writes the run folder here
    res = in_image(
        image,
        *("runbook", "run", "nexus-repos", "--params", "/etc/runbook/params.yaml"),
        *("--output-dir", "/etc/runbook/outputs"),
        volume=tmp_path,
        env={"NEXUS_PW": nexus.admin_password},
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    runs = list((tmp_path / "outputs").glob("*-image-test/run.json"))
    assert len(runs) == 1
    with nexus.admin() as admin:
        assert admin.get("/v1/repositories").json() == before, "plan mode must not create repositories"
