"""No secret anywhere, in every credential mode (issue #11 part 5).

One lab (`runbook lab up`, its real ports, inside the private network namespace of `make test`) serves the
module. Each mode is a full `runbook run --apply` of all six stages, in a fresh process as an operator runs
it, with the mode switched by parameters and re-applied:

* Docker Hub credentials on the upstream (`upstreams[].credentials`, the lab Docker Hub's account): first,
  while the Nexus cache is still cold, so the proxy really authenticates upstream;
* anonymous (the lab's parameters as shipped);
* authenticated, nodes with the static header (`karpenter.credential_mode: static-header`);
* authenticated, nodes reading Secrets Manager at boot (`credential_mode: secrets-manager`, moto).

After each run the scanner (tests/support/secret_scan.py) looks for every registered secret value, in every
encoding, in: every file of the output folder (run folders with notebooks, HTML, run.json and run.log, the
index, the history store, locks), the runbook's terminal output, and the lab's logs (component logs, the
Nexus emulator's request log, the output of the nodes' userData, their containerd and kubelet logs, the
lab state file).
The Docker Hub front and the Kubernetes stand-in keep their request records in memory only, no file: their
process logs are what is scanned of them. The Nexus request log has bodies (a real one has none): the test
checks they carry every password as "***".
What the real twins keep by design is not scanned: Nexus's database (.lab/nexus/data), the cluster's
objects (.lab/kube), the nodes' file systems (hosts.toml holds the header in static-header mode, as on a
real node: the positive control below finds it there) and their spec.json (the instance's userData, which
EC2 keeps and serves, header included, in that mode), the lab's secret store (.lab/secrets).

The values come from the lab's own setup: the files the lab generated in .lab/secrets, checked against what
moto's Secrets Manager holds, and the admin.password the Nexus emulator generated, read right after
`lab up` (stage 2 replaces it and Nexus deletes the file). Before each scan the scanner must find every one
of those values planted in a temporary file, so an empty result cannot come from a scanner that finds
nothing.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import pytest
import yaml

from runbook_lib.cli import main
from tests.support.labkit import lab_params_file
from tests.support.secret_scan import Scanner, Secret, encodings

REPO = Path(__file__).resolve().parents[2]
NODE_SECRET_ID = "lab/node-pull-credentials"
# What the lab's own files and logs may hold is scanned; what its real twin stores by design is not.
LAB_SCANNED = ("**/*.log", "**/*.jsonl", "state.json", "nodes/*/status.json")
LAB_NOT_SCANNED = ("nexus/data", "kube", "secrets", "registries", "images")


# ---------------------------------------------------------------------------------- the scanner alone
def test_scanner_finds_a_planted_secret_in_every_encoding(tmp_path) -> None:
    secret = Secret("planted", "s3cr3t/+Value=ü~", ("someone",))
    scanner = Scanner([secret])
    forms = encodings(secret)
    assert {"plain", "base64", "base64 urlsafe", "percent-encoded", "JSON-escaped", "hex"} <= set(forms)
    assert "base64(someone:password)" in forms
    for i, (encoding, form) in enumerate(forms.items()):
        path = tmp_path / f"planted-{i}.txt"
        path.write_bytes(b"noise before " + form.encode() + b" noise after")
        findings = scanner.scan_file(path)
        assert [f.secret for f in findings] == ["planted"], encoding
    # inside a longer base64 blob, at each byte offset (EC2 userData, a docker config, a JWT)
    for prefix in (b"", b"x", b"xy", b"xyz"):
        blob = base64.b64encode(prefix + b"header: " + secret.value.encode() + b" trailer")
        assert scanner.scan_bytes(blob, "blob"), prefix
    # a long value in SQLite: found in the rows even if the page layout splits it
    db_path = tmp_path / "history.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES (?)", ("a" * 5000 + secret.value + "b" * 5000,))
    db.commit()
    db.close()
    assert scanner.scan_file(db_path)
    # the masked form and unrelated text are not findings
    clean = tmp_path / "clean.txt"
    clean.write_text('{"password": "***", "user": "someone", "value": "s3cr3t"}')
    assert scanner.scan_file(clean) == []
    with pytest.raises(ValueError, match="too short"):
        Scanner([Secret("short", "abc")])


# ------------------------------------------------------------------------------------------- the lab
@dataclass
class LabRun:
    dir: Path
    params_path: Path
    base: dict
    outputs: Path
    secrets: list[Secret]
    output: list[str] = field(default_factory=list)  # the runbook's terminal output: lab up, every run

    def params_for(self, mode: str) -> Path:
        data = json.loads(json.dumps(self.base))
        if mode == "dockerhub-credentials":
            data["upstreams"][0]["credentials"] = {
                "username": "lab-hub",
                "password": "aws-sm:lab/dockerhub#password",
            }
        elif mode == "static-header":
            data["security"]["mode"] = "authenticated"
            data["karpenter"]["credential_mode"] = "static-header"
        elif mode == "secrets-manager":
            data["security"]["mode"] = "authenticated"
            data["karpenter"].update(credential_mode="secrets-manager", credentials_secret_id=NODE_SECRET_ID)
        else:
            assert mode == "anonymous"
        path = self.params_path.with_name(f"{mode}.yaml")
        path.write_text(yaml.safe_dump(data))
        return path

    def run(self, mode: str) -> dict:
        """`runbook run --apply` of all six stages in its own process; the run record."""
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "runbook_lib.cli",
                "run",
                "--params",
                str(self.params_for(mode)),
                "--apply",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=540,
        )
        self.output += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        record = json.loads(sorted(self.outputs.glob("*-lab*/run.json"))[-1].read_text())
        assert [s["name"] for s in record["stages"]] == [
            "preflight",
            "nexus-repos",
            "nexus-security",
            "helm",
            "karpenter",
            "verify",
        ]
        assert record["mode"] == "apply" and {s["status"] for s in record["stages"]} == {"ok"}
        return record

    def aws(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.base["aws"]["endpoint_url"],
            region_name=self.base["aws"]["region"],
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
        )

    def scan_everything(self) -> tuple[Scanner, list[str]]:
        scanner = Scanner(self.secrets)
        # self-check with the very values scanned for: each planted alone is found
        planted = self.dir.parent / "planted"
        planted.mkdir(exist_ok=True)
        for i, secret in enumerate(self.secrets):
            for j, form in enumerate(encodings(secret).values()):
                spot = planted / f"{i}-{j}.txt"
                spot.write_text(f"x {form} y")
                assert [f.secret for f in Scanner(self.secrets).scan_file(spot)] == [secret.name]
        findings = scanner.scan_tree(self.outputs)
        findings += scanner.scan_tree(self.dir, include=LAB_SCANNED, exclude=LAB_NOT_SCANNED)
        for i, text in enumerate(self.output):
            findings += scanner.scan_text(text, f"runbook terminal output #{i}")
        return scanner, [str(f) for f in findings]


def _lab_secret(lab_dir: Path, name: str) -> str:
    return (lab_dir / "secrets" / name).read_text().strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[LabRun]:
    tmp = tmp_path_factory.mktemp("secrets")
    params_path = lab_params_file(tmp)
    data = yaml.safe_load(params_path.read_text())
    data["lab"]["node_pools"] = {"default": 1}  # one node to roll per mode
    # one repetition; no timing threshold (tiny images on a shared machine); the rate-limit demo stays on
    data["verification"].update(repetitions=1, thresholds={"allow_bypass": False})
    data["karpenter"].update(rollout_poll_s=1)
    params_path.write_text(yaml.safe_dump(data))
    lab_dir = tmp / "lab"
    try:
        # in its own process, as the operator runs it: its output is scanned with the runs'
        up = subprocess.run(
            [sys.executable, "-m", "runbook_lib.cli", "lab", "up", "--params", str(params_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        # the admin.password Nexus generated: stage 2 of the first run replaces it and the file goes
        initial = (lab_dir / "nexus" / "data" / "admin.password").read_text().strip()
        run = LabRun(lab_dir, params_path, data, tmp / "outputs", [], [up.stdout, up.stderr])
        sm = run.aws("secretsmanager")
        stored = {
            sid: json.loads(sm.get_secret_value(SecretId=sid)["SecretString"])["password"]
            for sid in ("lab/nexus-admin", "lab/docker-pull", "lab/dockerhub")
        }
        assert stored == {
            "lab/nexus-admin": _lab_secret(lab_dir, "nexus-admin"),
            "lab/docker-pull": _lab_secret(lab_dir, "docker-pull"),
            "lab/dockerhub": _lab_secret(lab_dir, "dockerhub"),
        }
        pull_user = data["security"].get("user", "docker-pull")
        run.secrets = [
            Secret("Nexus admin password", stored["lab/nexus-admin"], ("admin",)),
            Secret("generated admin.password", initial, ("admin",)),
            Secret("pull password", stored["lab/docker-pull"], (pull_user,)),
            Secret("Docker Hub password", stored["lab/dockerhub"], ("lab-hub",)),
        ]
        assert len({s.value for s in run.secrets}) == 4
        yield run
    finally:
        main(["lab", "down", "--params", str(params_path)])


def assert_no_leak(lab: LabRun) -> None:
    scanner, findings = lab.scan_everything()
    scanned = {p.name for p in scanner.scanned}
    # the scan covered what it claims to: the run folders' files, the history, the logs of both sides
    assert {"run.json", "run.log", "00_preflight.ipynb", "05_verify.html", "history.sqlite"} <= scanned
    assert {"requests.jsonl", "nexus.log", "dockerhub.log", "karpenter.log", "containerd.log"} <= scanned
    assert findings == [], "secret found:\n" + "\n".join(findings)


def nexus_requests(lab: LabRun) -> list[dict]:
    return [json.loads(line) for line in (lab.dir / "nexus" / "requests.jsonl").read_text().splitlines()]


def assert_request_log_masks(lab: LabRun, upstream_credentials: bool = False) -> None:
    """A real Nexus request log has no bodies; the emulator's has them, with every secret as "***"."""
    log = nexus_requests(lab)
    change = [r for r in log if r["path"].endswith("/security/users/admin/change-password")]
    assert change and all(r["body"] == "***" for r in change)
    if upstream_credentials:
        sent = [
            r["body"]["httpClient"]["authentication"]
            for r in log
            if r["method"] in ("POST", "PUT")
            and r["path"].startswith("/service/rest/v1/repositories/docker/proxy")
            and (r["body"] or {}).get("name") == "docker-hub"
            and (r["body"].get("httpClient") or {}).get("authentication")
        ]
        assert sent and all(a["password"] == "***" and a["username"] == "lab-hub" for a in sent), sent


def nexus_admin_ok(lab: LabRun) -> bool:
    """The admin password scanned for is the one Nexus now takes."""
    r = httpx.get(
        lab.base["nexus"]["url"] + "/service/rest/v1/status/check", auth=("admin", lab.secrets[0].value)
    )
    return r.status_code == 200


# one lab run per mode: longer than the suite's per-test timeout on 2 shared cores (lab up is in the first)
on_the_lab = pytest.mark.timeout(900)


@pytest.mark.netns
@on_the_lab
def test_dockerhub_credentials_on_the_upstream(lab) -> None:
    lab.run("dockerhub-credentials")
    assert nexus_admin_ok(lab)
    # the proxy authenticated to the lab's Docker Hub with the account: pulls are charged to it
    state = httpx.get(f"http://127.0.0.1:{lab.base['lab']['dockerhub']['port']}/_lab/state").json()
    account = state["user"]
    assert account and state["sources"].get(account, {}).get("used", 0) > 0, state["sources"]
    assert_request_log_masks(lab, upstream_credentials=True)
    assert_no_leak(lab)


@pytest.mark.netns
@on_the_lab
def test_anonymous(lab) -> None:
    lab.run("anonymous")
    assert nexus_admin_ok(lab)
    assert_request_log_masks(lab)
    assert_no_leak(lab)


def _node_hosts_files(lab: LabRun) -> list[Path]:
    return list(lab.dir.glob("nodes/*/root/etc/containerd/certs.d/*/hosts.toml"))


@pytest.mark.netns
@on_the_lab
def test_static_header(lab) -> None:
    record = lab.run("static-header")
    assert nexus_admin_ok(lab)
    assert any("static-header" in f for s in record["stages"] for f in s["flags"])
    # positive control: the header is where the mode puts it, on the node (as on a real node)
    pull = next(s for s in lab.secrets if s.name == "pull password")
    assert any(Scanner([pull]).scan_file(p) for p in _node_hosts_files(lab)), _node_hosts_files(lab)
    assert_no_leak(lab)


@pytest.mark.netns
@on_the_lab
def test_secrets_manager(lab) -> None:
    lab.run("secrets-manager")
    assert nexus_admin_ok(lab)
    pull = next(s for s in lab.secrets if s.name == "pull password")
    node_secret = lab.aws("secretsmanager").get_secret_value(SecretId=NODE_SECRET_ID)["SecretString"]
    assert node_secret == f"{pull.users[0]}:{pull.value}"
    # the boot script filled the header in from Secrets Manager
    assert any(Scanner([pull]).scan_file(p) for p in _node_hosts_files(lab)), _node_hosts_files(lab)
    assert_no_leak(lab)
