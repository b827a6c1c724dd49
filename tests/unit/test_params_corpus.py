"""Every malformed parameters file is refused cleanly: exit 2, the field named, no traceback, nothing run.

The corpus is tests/data/params-invalid/ (see its README); a fuzz test checks that no input at all makes
`runbook params check` exit 1 or print a traceback.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.cli import main
from tests.support.lab_node import wait_for

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "params-invalid"
FILES = sorted(CORPUS.glob("*.yaml"))
LAB = REPO / "parameters" / "lab.yaml"
RUNBOOK = REPO / ".venv" / "bin" / "runbook"


def header(path: Path) -> dict[str, str]:
    """The `# key: value` comments at the top of a corpus file."""
    out: dict[str, str] = {}
    for raw in path.read_bytes().split(b"\n")[:4]:
        line = raw.decode("utf-8", "replace")
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            out[key] = value
    return out


def test_corpus_is_large_and_declares_each_defect() -> None:
    assert len(FILES) >= 60
    for path in FILES:
        h = header(path)
        assert h.get("defect") and h.get("field"), path.name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_check_refuses_with_field_and_no_traceback(path: Path, capsys) -> None:
    h = header(path)
    assert main(["params", "check", str(path)]) == 2
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert "Traceback" not in out
    problems = [line for line in out.splitlines() if line.startswith(f"{path}: ")]
    assert any(line.startswith(f"{path}: {h['field']}") for line in problems), out
    if "secret" in h:
        assert h["secret"] not in out


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_run_refuses_and_creates_no_run_folder(path: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "outputs"
    assert main(["run", "preflight", "--params", str(path), "--output-dir", str(out_dir)]) == 2
    cap = capsys.readouterr()
    assert "nothing was executed" in cap.err and "Traceback" not in cap.out + cap.err
    assert not out_dir.exists()
    if "secret" in header(path):
        assert header(path)["secret"] not in cap.out + cap.err


SAMPLE = [
    CORPUS / f"{n}.yaml" for n in ("binary", "non-utf8", "deep-flow", "url-userinfo-nexus", "port-true")
]


@pytest.mark.parametrize("path", SAMPLE, ids=[p.stem for p in SAMPLE])
def test_installed_command_refuses_sample(path: Path, tmp_path: Path) -> None:
    h = header(path)
    check = subprocess.run([str(RUNBOOK), "params", "check", str(path)], capture_output=True, text=True)
    assert check.returncode == 2 and "Traceback" not in check.stdout + check.stderr
    assert f"{path}: {h['field']}" in check.stdout
    run = subprocess.run(
        [str(RUNBOOK), "run", "--params", str(path), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "out").exists()


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: d / "missing.yaml", "No such file"),
        (lambda d: written(d / "empty.yaml", b""), "(top level)"),
        (lambda d: written(d / "blob.bin", bytes(range(256)) * 4), "binary"),
    ],
    ids=["directory", "missing", "empty", "blob"],
)
def test_any_path_exits_2(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    r = subprocess.run([str(RUNBOOK), "params", "check", str(path)], capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert reason in r.stdout and "Traceback" not in r.stdout + r.stderr


def mutations(seed: int, count: int) -> list[bytes]:
    """Random bytes and byte-level mutations of lab.yaml (flips, deletions, duplications, splices)."""
    rng = random.Random(seed)
    base = LAB.read_bytes()
    out: list[bytes] = [rng.randbytes(rng.randrange(1, 400)) for _ in range(count // 4)]
    while len(out) < count:
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i : i + rng.randrange(1, 40)]
            elif op == 2:
                data[i:i] = data[rng.randrange(len(data)) :][: rng.randrange(1, 80)]
            else:
                data[i:i] = rng.choice([b"true", b"[", b"{", b"&a ", b"*a", b"\t", b"\xff", b": ", b"\n- "])
        out.append(bytes(data))
    return out


def test_fuzz_check_exits_0_or_2_never_a_traceback(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fuzz.yaml"
    codes: dict[int, int] = {}
    for raw in mutations(seed=20261203, count=400):
        path.write_bytes(raw)
        try:
            code = main(["params", "check", str(path)])
        except BaseException as err:  # noqa: BLE001 - any escape is the failure this test looks for
            pytest.fail(f"params check raised {type(err).__name__} on {raw[:80]!r}")
        out = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in out.out + out.err, raw[:80]
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(2, 0) > 100  # the mutations do produce invalid files


# ---------------------------------------------------------------------------- the lab Nexus sees nothing
NEXUS_SAMPLE = [
    CORPUS / f"{n}.yaml"
    for n in ("port-true", "dup-mirror-url", "image-colons", "release-54", "dup-key-nested", "ns-uppercase")
]


def test_lab_nexus_gets_zero_requests_from_invalid_runs(tmp_path: Path) -> None:
    pytest.importorskip("runbook_lab", reason="the lab package is not installed")
    from tests.support.lab_nexus import running_nexus

    log = tmp_path / "requests.jsonl"
    with running_nexus(tmp_path / "nexus", request_log=log) as nx:
        for src in NEXUS_SAMPLE:
            text = src.read_text().replace("http://127.0.0.1:18081", nx.url)
            assert nx.url in text  # the file really points at this emulator
            path = tmp_path / src.name
            path.write_text(text)
            r = subprocess.run(
                [
                    str(RUNBOOK),
                    "run",
                    "--apply",
                    "--params",
                    str(path),
                    "--output-dir",
                    str(tmp_path / "out"),
                ],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 2, r.stdout + r.stderr
        assert not log.exists() or log.read_text() == ""
        # the log does record: one request of ours shows up
        with nx.client() as c:
            c.get("/v1/status")
        # the emulator writes its log line after it has answered: wait for the line, not the answer
        wait_for(lambda: log.exists() and log.read_text().endswith("\n"), 10, "the request log line")
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert [e["path"] for e in entries] == ["/service/rest/v1/status"]
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
