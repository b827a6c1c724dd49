"""No secret reaches the run folder, in any encoding.

The canary run (one real papermill execution): the parameters file refers to one canary through
``env:`` and another through ``file:``; the fixture notebook resolves both, plus a third one the
runner process never sees (only the kernel resolves it, so only the kernel-side scrubbers can hide
it), then prints them in every encoding, shows them in HTML and a DataFrame, records them, and
raises an exception carrying them. No file under the run folder may contain any form of any canary.
"""

from __future__ import annotations

import base64
import html
import io
import json
import urllib.parse
from pathlib import Path

import nbformat
import pytest

from runbook_lib.audit.redact_io import (
    SCHEME,
    RedactedOutput,
    install_papermill_handler,
    register_secret,
    scrub_json_text,
)
from runbook_lib.notebook import ScrubbingStream
from runbook_lib.runner import STAGE_NOTEBOOKS, run
from runbook_lib.secrets import MASK, REDACTOR
from tests.support.offline_params import offline_params_yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"

# Chosen so that base64 has '+' or '/' (std and urlsafe forms differ) and padding, and URL (quote and
# quote_plus) and HTML escaping all change the text: every encoding is a distinct string.
ENV_CANARY = ('Adm1n "Canary~~?>&x', "admin")
FILE_CANARY = ("Pull&<Canary/+x ?~~z1q", "docker-pull")
KERNEL_CANARY = ("Kern3l <Canary>?~~/+?!", "kernel-user")
CANARIES = [ENV_CANARY, FILE_CANARY, KERNEL_CANARY]


def encodings(value: str, user: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value,
        "base64": base64.b64encode(raw).decode(),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "url": urllib.parse.quote(value, safe=""),
        "url-plus": urllib.parse.quote_plus(value),
        "basic-auth": base64.b64encode(f"{user}:{value}".encode()).decode(),
        "html": html.escape(value),
    }


def test_canaries_exercise_every_encoding() -> None:
    for value, user in CANARIES:
        forms = encodings(value, user)
        assert forms["base64"] != forms["base64-urlsafe"], value
        assert forms["url"] != value and forms["html"] != value, value
        assert len(set(forms.values())) == len(forms), value


PARAMS = offline_params_yaml("canary", "RUNBOOK_TEST_ADMIN_CANARY", "file:secrets/pull-password.txt", "out")


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("canary")
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "pull-password.txt").write_text(FILE_CANARY[0] + "\n")
    params_file = tmp / "params.yaml"
    params_file.write_text(PARAMS)
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    (notebooks / STAGE_NOTEBOOKS["preflight"]).write_bytes((FIXTURES / "canary.ipynb").read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNBOOK_TEST_ADMIN_CANARY", ENV_CANARY[0])
        mp.setenv("RUNBOOK_KERNEL_ONLY_CANARY", KERNEL_CANARY[0])
        result = run(params_file, ["preflight"], True, None, "canary", notebooks_dir=notebooks)
    yield result
    REDACTOR.clear()  # the canaries must not mask text in other test modules


def test_no_canary_in_any_file(canary_run) -> None:
    files = [p for p in canary_run.run_dir.rglob("*") if p.is_file()]
    files.append(canary_run.run_dir.parent / "index.html")
    assert {p.name for p in files} >= {
        "00_preflight.ipynb",
        "00_preflight.html",
        "run.json",
        "run.log",
        "index.html",
    }
    leaks = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for value, user in CANARIES:
            for name, form in encodings(value, user).items():
                if form in text:
                    leaks.append(f"{path.name}: {name} of {value!r}")
    assert not leaks


def test_the_notebook_did_try_to_leak(canary_run) -> None:
    """Guards the test above against passing vacuously: the outputs exist and hold masks."""
    nb = nbformat.read(canary_run.run_dir / "00_preflight.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    for name in ("raw", "b64", "urlsafe", "unpadded", "url", "basic"):
        assert stdout.count(f"{name} {MASK}\n") == 3, name
    assert stdout.count(f"\n{MASK}\n") >= 3  # the secrets printed in two pieces
    assert stderr.count(f"stderr {MASK}") == 3
    dumped = json.dumps(outputs)
    assert "text/html" in dumped and "<table" in dumped  # the DataFrame was displayed
    stage = canary_run.record["stages"][0]
    assert stage["status"] == "failed"
    assert stage["results"] == {"leaky": [MASK, MASK, MASK]}
    assert (
        stage["failure"]["reason"] == f"RuntimeError: login failed with {' / '.join([f'{MASK} {MASK}'] * 3)}"
    )


def test_kernel_only_canary_is_unknown_to_the_runner(canary_run) -> None:
    """The third canary is hidden by the kernel-side scrubbers alone, not by the runner's redactor."""
    value = KERNEL_CANARY[0]
    assert REDACTOR.scrub(value) == value
    assert REDACTOR.scrub(ENV_CANARY[0]) == MASK and REDACTOR.scrub(FILE_CANARY[0]) == MASK


# ----------------------------------------------------------------------- the pieces, one by one


@pytest.fixture
def secret() -> str:
    value = "Unit<Secret>&/+?~~"
    register_secret(value, "unit-user")
    yield value
    REDACTOR.clear()


def test_register_secret_adds_markup_forms(secret: str) -> None:
    for form in encodings(secret, "unit-user").values():
        assert REDACTOR.scrub(f"x {form} y") == f"x {MASK} y", form
    assert REDACTOR.scrub(json.dumps("é" + secret, ensure_ascii=True)) == '"\\u00e9' + MASK + '"'


def test_scrubbing_stream_sees_secrets_split_across_writes(secret: str) -> None:
    inner = io.StringIO()
    stream = ScrubbingStream(inner)
    stream.write("token ")
    stream.write(secret[:4])
    stream.write(secret[4:] + "\nnext ")
    assert inner.getvalue() == f"token {MASK}\n"  # the unterminated line is held back
    stream.write(secret)
    stream.flush()
    assert inner.getvalue() == f"token {MASK}\nnext {MASK}"
    assert stream.getvalue() == inner.getvalue()  # other attributes reach the real stream


def test_papermill_saves_through_redact_scheme(secret: str, tmp_path: Path) -> None:
    from papermill.iorw import papermill_io

    install_papermill_handler()
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"password {secret} and {html.escape(secret)}"))
    nb.metadata["papermill"] = {"parameters": {"pw": secret}}
    target = tmp_path / "out.ipynb"
    papermill_io.write(nbformat.writes(nb), SCHEME + str(target))
    text = target.read_text()
    assert secret not in text and html.escape(secret) not in text
    saved = nbformat.reads(text, as_version=4)
    assert saved.cells[0].source == f"password {MASK} and {MASK}"
    assert saved.metadata["papermill"]["parameters"]["pw"] == MASK
    assert papermill_io.read(SCHEME + str(target)) == text


def test_scrub_json_text_sees_escaped_forms(secret: str) -> None:
    quoted = 'Q"uote\\d-Secret'
    register_secret(quoted)
    doc = json.dumps({"a": [quoted, {"b": secret}]}, indent=1)
    assert quoted.replace("\\", "\\\\").replace('"', '\\"') in doc  # as it sits in JSON text
    assert json.loads(scrub_json_text(doc)) == {"a": [MASK, {"b": MASK}]}
    assert scrub_json_text("not json " + secret) == "not json " + MASK


def test_redacted_output_writes(secret: str, tmp_path: Path) -> None:
    out = RedactedOutput()
    out.write_text(str(tmp_path / "a.log"), f"line {secret}\n")
    out.write_json(str(tmp_path / "a.json"), {"k": secret, secret: [secret]})
    assert (tmp_path / "a.log").read_text() == f"line {MASK}\n"
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": MASK, MASK: [MASK]}
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_a_held_token_is_scrubbed_until_released_and_permanent_secrets_stay() -> None:
    """Registry bearer tokens are held while their client is open: scrubbed meanwhile, gone from the
    pattern after release (a fresh client per pull sample would otherwise grow it without bound), and a
    token held twice stays until both holders released it. Secrets added for good are never dropped."""
    from runbook_lib.secrets import MASK, Redactor

    r = Redactor()
    r.add("permanent-secret-value")
    r.hold("token-one-abcdef")
    r.hold("token-one-abcdef")
    text = "a token-one-abcdef and permanent-secret-value"
    assert r.scrub(text) == f"a {MASK} and {MASK}"
    r.release("token-one-abcdef")
    assert r.scrub(text) == f"a {MASK} and {MASK}"  # still held once
    r.release("token-one-abcdef")
    assert r.scrub(text) == f"a token-one-abcdef and {MASK}"
    for i in range(500):
        r.hold(f"token-{i:04d}-xyz")
        r.release(f"token-{i:04d}-xyz")
    assert len(r._forms) == len(Redactor.forms("permanent-secret-value"))


def test_registry_client_releases_its_tokens_on_close() -> None:
    from runbook_lib.registry.client import RegistryClient
    from runbook_lib.secrets import MASK, REDACTOR

    client = RegistryClient("http://127.0.0.1:9")
    client._tokens["repository:x:pull"] = "lab-token-123456"
    REDACTOR.hold("lab-token-123456")
    try:
        assert REDACTOR.scrub("lab-token-123456") == MASK
    finally:
        client.close()
    assert REDACTOR.scrub("lab-token-123456") == "lab-token-123456"
