"""Browser tests (issue #13 part 5): Debian's Chromium, driven by Playwright, through JupyterLab.

`runbook notebook` serves copies of the stage notebooks on a free loopback port; the lab's Nexus
emulator (in-process, on loopback, inside the private network namespace) is the target. A person's
session: open stage 1's notebook, run all cells, pick a broken and then a good parameters file in the
form, see the plan, click Apply, type the target's name, see the result and the checks. Screenshots go
to test-artifacts/browser/ (gitignored). Then: the form's apply and `runbook run --apply` on a fresh
Nexus record the same changes, results and checks; nothing secret is in the saved notebook or its
widget state; a headless run records exactly what the notebook without its form cell records.

Live progress (#13 part 2): stage 5's notebook, run in the browser against a second Nexus emulator
proxying the lab's Docker Hub (a real distribution registry behind the Docker Hub stand-in, limit 5),
shows the rate-limit demonstration's bar reaching its total and its chart filling in per manifest GET.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.labkit import Lab, free_port, needs_registry, upstream_fixture

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"
TARGET = "browser-lab"
STAGE_NB = "01_nexus_repositories.ipynb"
SECRETS = {
    "TEST_NEXUS_ADMIN": "managed-admin-S3cret-value",
    "TEST_HUB_PASSWORD": "hub-upstream-S3cret-value",
    "TEST_PULL_PASSWORD": "pull-user-S3cret-value",  # the verify lab's pull user (progress test)
}
VERIFY_NB = "05_verification.ipynb"
HUB_LIMIT = 5  # the demonstration's source is refused after this many manifest GETs

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "needs Debian's chromium (scripts/system-packages.sh installs it as root)", allow_module_level=True
    )


@dataclass
class Target:
    params_file: Path
    broken_file: Path
    nexus_dir: Path
    port: int
    emulator: object
    initial_passwords: list[str]  # Nexus's generated admin.password of each emulator (secrets too)

    def restart_fresh(self) -> None:
        """The same Nexus URL and ports, with no state: what the form's apply started from."""
        from runbook_lab.nexus.emulator import NexusEmulator

        self.emulator.stop()
        shutil.rmtree(self.nexus_dir)
        self.emulator = NexusEmulator(
            self.nexus_dir, port=self.port, version="3.94.0-01", edition="COMMUNITY"
        ).start()
        self.initial_passwords.append((self.nexus_dir / "admin.password").read_text().strip())


def _params(tmp: Path, nexus_url: str, nexus_dir: Path) -> dict:
    data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
    data.pop("lab", None)
    hub, quay = free_port(), free_port()
    kubeconfig = tmp / "kubeconfig"  # stage 1 asks for no Kubernetes object; the client needs a config
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "none"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    data["target"] = TARGET
    data["nexus"].update(
        url=nexus_url,
        admin_password="env:TEST_NEXUS_ADMIN",
        initial_password_file=str(nexus_dir / "admin.password"),
    )
    data["upstreams"] = [
        {
            "name": "docker-hub",
            "registry": "docker.io",
            "remote_url": "http://127.0.0.1:9",
            "group": "docker",
            "connector_port": hub,
            "credentials": {"username": "hub-user", "password": "env:TEST_HUB_PASSWORD"},
        },
        {
            "name": "quay-io",
            "registry": "quay.io",
            "remote_url": "http://127.0.0.1:9",
            "connector_port": quay,
        },
    ]
    data["kubernetes"] = {"kubeconfig": str(kubeconfig)}
    data["outputs"] = {"dir": str(tmp / "outputs")}
    return data


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[Target]:
    from runbook_lab.nexus.emulator import NexusEmulator

    tmp = tmp_path_factory.mktemp("browser")
    for name, value in SECRETS.items():
        os.environ[name] = value
    nexus_dir = tmp / "nexus"
    emulator = NexusEmulator(nexus_dir, port=0, version="3.94.0-01", edition="COMMUNITY").start()
    folder = tmp / "parameters"
    folder.mkdir()
    good = folder / "browser-lab.yaml"
    good.write_text(yaml.safe_dump(_params(tmp, emulator.url, nexus_dir)))
    broken = folder / "broken.yaml"
    broken.write_text(yaml.safe_dump({**_params(tmp, emulator.url, nexus_dir), "surprise": 1}))
    initial = (nexus_dir / "admin.password").read_text().strip()
    t = Target(good, broken, nexus_dir, emulator.port, emulator, [initial])
    try:
        yield t
    finally:
        t.emulator.stop()
        for name in SECRETS:
            os.environ.pop(name, None)


@dataclass
class Jupyter:
    url: str
    token: str
    notebooks: Path


@pytest.fixture(scope="module")
def jupyter(target: Target, tmp_path_factory) -> Iterator[Jupyter]:
    """`runbook notebook --dir` on a free port, widget state saved with the notebook (the worst case)."""
    tmp = tmp_path_factory.mktemp("jupyter")
    settings = tmp / "settings" / "@jupyter-widgets" / "jupyterlab-manager"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)  # every cell stays in the page, scrolled out of view or not
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    notebooks = target.params_file.parent.parent / "notebooks"
    with running_jupyter(tmp, ["--dir", str(notebooks)], notebooks) as lab:
        yield lab


@contextlib.contextmanager
def running_jupyter(tmp: Path, args: list[str], notebooks: Path) -> Iterator[Jupyter]:
    """`runbook notebook ARGS` on a free port with its settings under TMP/settings, until the block ends."""
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "HOME": str(tmp)}
    port = free_port()
    log = (tmp / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.cli", "notebook", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        cwd=tmp,
    )
    try:
        line = proc.stdout.readline()  # the URL, printed once JupyterLab listens
        match = re.search(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\S+)", line)
        assert match, f"no URL from runbook notebook: {line!r}; log: {tmp / 'jupyter.log'}"
        yield Jupyter(match.group(1), match.group(2), notebooks)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def page(jupyter: Jupyter) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / "last.png"), full_page=True)
            browser.close()


def shot(page, name: str) -> None:
    page.locator(".runbook-params").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def choose(page, path: Path) -> None:
    box = page.locator(".runbook-params input")
    box.fill(str(path))
    box.press("Enter")


def save_notebook(page, saved: Path) -> Path:
    """Ctrl+S in JupyterLab; returns once the file on disk changed (within a minute)."""
    before = saved.stat().st_mtime
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while saved.stat().st_mtime == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return saved


def run_records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/run.json"))]


def comparable(stage: dict) -> dict:
    return {k: stage[k] for k in ("status", "changes", "results", "checks", "flags", "failure")}


@pytest.fixture(scope="module")
def session(page, jupyter: Jupyter, target: Target) -> dict:
    """A person's session in the form, top to bottom; returns the run record of the form's apply."""
    page.goto(f"{jupyter.url}/lab/tree/{STAGE_NB}?token={jupyter.token}")
    page.locator(".jp-Notebook").wait_for()
    page.get_by_text(re.compile(r"eks-mirror-runbook\) \| Idle")).wait_for()  # the kernel is up
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    about = page.locator(".runbook-about")
    about.wait_for()
    page.wait_for_function(  # Run All reached the checks: the cells below use the form's file
        "() => [...document.querySelectorAll('.jp-OutputArea-output')].some("
        "e => e.innerText.includes('serves the registry API'))",
        timeout=180_000,
    )
    assert f"{target.params_file}: ok" in about.inner_text()
    assert not page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']").count()
    shot(page, "1-form-opened")

    choose(page, target.broken_file)
    page.wait_for_function(
        "() => document.querySelector('.runbook-about').innerText.includes('problem(s)')", timeout=120_000
    )
    assert "surprise" in about.inner_text()  # the unknown key, named inline
    assert page.locator("button.runbook-apply").is_disabled()
    shot(page, "2-validation-errors")

    choose(page, target.params_file)
    page.wait_for_function(
        "() => document.querySelector('.runbook-plan').innerText.includes('create')", timeout=120_000
    )
    assert f"{target.params_file}: ok" in about.inner_text()
    assert "upstreams[0].credentials.password: env:TEST_HUB_PASSWORD" in about.inner_text()
    shot(page, "3-plan")

    page.locator("button.runbook-apply").click()
    confirm = page.locator(".runbook-confirm input")
    confirm.fill(TARGET[:-1])  # not the name yet: Confirm stays disabled
    page.wait_for_timeout(500)
    assert page.locator("button.runbook-confirm-button").is_disabled()
    confirm.fill(TARGET)
    page.wait_for_function("() => !document.querySelector('button.runbook-confirm-button').disabled")
    shot(page, "4-confirm")
    page.locator("button.runbook-confirm-button").click()
    page.wait_for_function(
        "() => /run (ok|failed):/.test(document.querySelector('.runbook-result').innerText)", timeout=300_000
    )
    result = page.locator(".runbook-result").inner_text()
    shot(page, "5-applied")
    assert "run ok:" in result, result
    assert "applied: create docker proxy docker-hub" in result, result
    page.wait_for_function(  # the checks, as a table under the result
        "() => document.querySelector('.runbook-result').innerText.includes('serves the registry API')"
    )
    page.wait_for_function(  # the plan after the apply: nothing left to create
        "() => document.querySelector('.runbook-plan').innerText.includes('0 to create')", timeout=120_000
    )

    save_notebook(page, jupyter.notebooks / STAGE_NB)
    [record] = [r for r in run_records(target.params_file.parent.parent / "outputs") if r["mode"] == "apply"]
    return record


def test_form_applies_the_stage_and_shows_the_result(session: dict) -> None:
    assert session["target"] == TARGET and session["status"] == "ok"
    assert session["note"] == "JupyterLab form"  # the audit record says how it was applied
    [stage] = session["stages"]
    assert stage["name"] == "nexus-repos" and stage["changes"]["create"] > 0
    assert all(c["ok"] for c in stage["checks"])


def test_form_and_runbook_run_record_the_same_changes_and_results(session: dict, target: Target) -> None:
    target.restart_fresh()
    out = target.params_file.parent.parent / "outputs-cli"
    cli = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "run", "nexus-repos", "--params", str(target.params_file)]
        + ["--apply", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    [record] = run_records(out)
    assert record["mode"] == session["mode"] == "apply"
    assert record["params_sha256"] == session["params_sha256"]
    assert comparable(record["stages"][0]) == comparable(session["stages"][0])


def _forms(value: str) -> set[str]:
    return {
        value,
        base64.b64encode(value.encode()).decode(),
        base64.b64encode(f"admin:{value}".encode()).decode(),
    }


def test_no_secret_in_the_saved_notebook_or_widget_state(
    session: dict, jupyter: Jupyter, target: Target
) -> None:
    saved = (jupyter.notebooks / STAGE_NB).read_text()
    nb = json.loads(saved)
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert state, "the widget state was saved (the case this test is about)"
    assert TARGET in json.dumps(state)  # the state holds what the form showed
    values = set().union(*(_forms(v) for v in [*SECRETS.values(), *target.initial_passwords]))
    checkpoints = list((jupyter.notebooks / ".ipynb_checkpoints").glob("*.ipynb"))
    for text in [saved, *(p.read_text() for p in checkpoints)]:
        assert not [v for v in values if v in text]


def test_headless_run_records_what_the_notebook_without_the_form_records(target: Target, tmp_path) -> None:
    """papermill: the form cell creates nothing, prints nothing, records nothing."""
    import nbformat

    from runbook_lib import runner

    bare = tmp_path / "bare"
    bare.mkdir()
    shipped = runner.default_notebooks_dir() / STAGE_NB
    nb = nbformat.read(shipped, as_version=4)
    nb.cells = [c for c in nb.cells if "interactive.form" not in c.source]
    nbformat.write(nb, bare / STAGE_NB)
    with_form = runner.run(target.params_file, ["nexus-repos"], False, tmp_path / "a", None)
    without = runner.run(target.params_file, ["nexus-repos"], False, tmp_path / "b", None, notebooks_dir=bare)
    assert with_form.exit_code == without.exit_code == 0
    assert comparable(with_form.record["stages"][0]) == comparable(without.record["stages"][0])
    saved = nbformat.read(with_form.run_dir / with_form.record["stages"][0]["notebook"], as_version=4)
    [cell] = [c for c in saved.cells if "interactive.form" in c.source]
    assert cell.outputs == [] and "widgets" not in saved.metadata


# ------------------------------------------------------------------------------- live progress (#13.2)
upstream = pytest.fixture(scope="module")(upstream_fixture)


class _Stages(Lab):
    """Stages 1 and 2 in this process, as labkit's Lab runs them, on a parameters file of this test."""

    def __init__(self, params, run_dir: Path) -> None:
        self.params, self.run_dir = params, run_dir
        self.records, self.apply, self.api_client = {}, False, None


@pytest.fixture(scope="module")
def verify_params(target: Target, upstream, tmp_path_factory) -> Iterator[Path]:
    """Stages 1-2 applied to a fresh emulator that proxies the lab's Docker Hub; a parameters file for
    stage 5 with one image, the node path off and the rate-limit demonstration on (from 127.0.0.2)."""
    from runbook_lab.nexus.emulator import NexusEmulator
    from runbook_lib import params as params_mod

    tmp = tmp_path_factory.mktemp("verify")
    emulator = NexusEmulator(tmp / "nexus", port=0, version="3.94.0-01", edition="COMMUNITY").start()
    target.initial_passwords.append((tmp / "nexus" / "admin.password").read_text().strip())
    data = _params(tmp, emulator.url, tmp / "nexus")
    data["target"] = "verify-lab"
    hub_port, quay_port = free_port(), free_port()
    data["upstreams"] = [
        {
            "name": "docker-hub",
            "registry": "docker.io",
            "remote_url": upstream.url,
            "group": "docker",
            "connector_port": hub_port,
            "mirror_url": f"http://127.0.0.1:{hub_port}",
        },
        {"name": "quay-io", "registry": "quay.io", "remote_url": upstream.url, "connector_port": quay_port},
    ]
    data["security"] = {"mode": "anonymous", "pull_password": "env:TEST_PULL_PASSWORD"}
    data["verification"].update(
        images=["docker.io/library/demo:1"],
        repetitions=1,
        node_pull=False,
        ratelimit_reserve=0,
        counters_url=f"{emulator.url}/_lab/counters",
        demonstrate_rate_limit=True,
        demo_source_address="127.0.0.2",
        thresholds={},
    )
    path = tmp / "verify-lab.yaml"
    path.write_text(yaml.safe_dump(data))
    _Stages(params_mod.load(path), tmp).run_stages(apply=True)
    hub = upstream.hub
    saved, hub.config = hub.config, hub.config.updated({"limit": HUB_LIMIT})
    hub.ledger.reset()
    try:
        yield path
    finally:
        hub.config = saved
        emulator.stop()


def _with_params_file(notebook: Path, params_file: Path) -> None:
    """The parameters cell names this file, as a person edits it (the form's first choice)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source = re.sub(r'^params_file: str = "[^"]*"', f'params_file: str = "{params_file}"', cell.source)
    assert str(params_file) in cell.source
    nbformat.write(nb, notebook)


WATCH_CHARTS = """() => {
  window.chartSamples = [];
  new MutationObserver(() => {
    for (const box of document.querySelectorAll('.runbook-progress')) {
      const svg = box.querySelector('.runbook-progress-chart svg');
      if (!svg || !box.textContent.includes('rate-limit demonstration')) continue;
      const n = Number(svg.getAttribute('data-samples'));
      if (window.chartSamples.at(-1) !== n) window.chartSamples.push(n);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@needs_registry
def test_live_progress_of_the_rate_limit_demonstration(page, jupyter: Jupyter, verify_params: Path) -> None:
    _with_params_file(jupyter.notebooks / VERIFY_NB, verify_params)
    # ?reset: a workspace with this notebook alone, so Run All cannot reach the stage 1 notebook's tab
    page.goto(f"{jupyter.url}/lab/tree/{VERIFY_NB}?reset&token={jupyter.token}")
    page.locator(".lm-TabBar-tab.jp-mod-current", has_text=VERIFY_NB).wait_for()
    page.locator(".jp-Notebook").wait_for()
    page.get_by_text(re.compile(r"eks-mirror-runbook\) \| Idle")).wait_for()
    page.evaluate(WATCH_CHARTS)  # every sample count the chart shows, in order, while the cells run
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(  # the demonstration's table: the step after the GETs ran
        "() => [...document.querySelectorAll('.jp-OutputArea-output')].some("
        "e => e.innerText.includes('pull through the warm mirror'))",
        timeout=200_000,  # within pytest's 300 s, so a stuck run fails here with the page saved
    )
    box = page.locator(".runbook-progress", has_text="rate-limit demonstration")
    box.scroll_into_view_if_needed()
    box.screenshot(path=str(ARTIFACTS / "6-progress-ratelimit.png"))
    page.screenshot(path=str(ARTIFACTS / "6-progress-page.png"))
    gets = HUB_LIMIT + 1  # served until the limit, then the refusal: the bar's total shrinks to them
    assert box.locator(".runbook-progress-counts").inner_text() == f"{gets}/{gets} GETs"
    assert box.locator(".runbook-progress-label").inner_text() == f"429 after {HUB_LIMIT} served"
    width = box.locator(".runbook-progress-bar .progress-bar").evaluate("e => e.style.width")
    assert width == "100%", width
    series = box.locator(".runbook-progress-chart svg rect.sample").evaluate_all(
        "rects => rects.map(r => r.getAttribute('data-series'))"
    )
    assert series == ["served"] * HUB_LIMIT + ["429 refused"]
    seen = page.evaluate("() => window.chartSamples")
    assert seen[-1] == gets and seen == sorted(seen) and len(set(seen)) > 2, seen  # filled in as they came

    saved = save_notebook(page, jupyter.notebooks / VERIFY_NB)
    text = saved.read_text()
    state = json.loads(text)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert f"{gets}/{gets} GETs" in json.dumps(state)  # the progress widgets' state was saved ...
    values = set().union(*(_forms(v) for v in SECRETS.values()))
    assert not [v for v in values if v in text]  # ... and holds no secret, nor does the notebook


WATCH_LIVE = """() => {
  window.liveSamples = [];
  new MutationObserver(() => {
    const svg = [...document.querySelectorAll('.runbook-live .runbook-progress')]
      .filter(b => b.textContent.includes('rate-limit demonstration'))
      .map(b => b.querySelector('.runbook-progress-chart svg'))[0];
    if (!svg) return;
    const n = Number(svg.getAttribute('data-samples'));
    const done = /run (ok|failed):/.test(document.querySelector('.runbook-result').innerText);
    if (window.liveSamples.at(-1)?.n !== n) window.liveSamples.push({n, done});
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@needs_registry
def test_live_progress_under_the_forms_apply(page, jupyter: Jupyter, verify_params: Path, upstream) -> None:
    """After the test above, on its page: the verify form's Apply runs the stage headless (its own
    kernel, runner.run) and the form shows the stage's bars live while it runs."""
    upstream.hub.ledger.reset()  # the demonstration's budget again
    page.evaluate(WATCH_LIVE)
    page.locator("button.runbook-apply").click()
    page.locator(".runbook-confirm input").fill("verify-lab")
    page.wait_for_function("() => !document.querySelector('button.runbook-confirm-button').disabled")
    page.locator("button.runbook-confirm-button").click()
    page.wait_for_function(
        "() => /run (ok|failed):/.test(document.querySelector('.runbook-result').innerText)", timeout=240_000
    )
    page.screenshot(path=str(ARTIFACTS / "7-form-apply-progress.png"))
    result = page.locator(".runbook-result").inner_text()
    assert "run ok:" in result, result
    box = page.locator(".runbook-live .runbook-progress", has_text="rate-limit demonstration")
    gets = HUB_LIMIT + 1
    assert box.locator(".runbook-progress-counts").inner_text() == f"{gets}/{gets} GETs"
    assert box.locator(".runbook-progress-label").inner_text() == f"429 after {HUB_LIMIT} served"
    seen = page.evaluate("() => window.liveSamples")
    counts = [s["n"] for s in seen]
    assert counts[-1] == gets and counts == sorted(counts) and len(set(counts)) > 2, seen
    assert not any(s["done"] for s in seen), seen  # every sample showed while the stage still ran

    saved = save_notebook(page, jupyter.notebooks / VERIFY_NB)
    text = saved.read_text()
    state = json.loads(text)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    labels = [w for w in state.values() if w["state"].get("value") == f"429 after {HUB_LIMIT} served"]
    assert len(labels) == 2  # the cells' bar and the form's mirror of it, saved with the notebook ...
    values = set().union(*(_forms(v) for v in SECRETS.values()))
    assert not [v for v in values if v in text]  # ... and holds no secret
