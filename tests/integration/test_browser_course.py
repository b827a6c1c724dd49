"""Browser test of one course exercise end to end (issue #13 part 5): Debian's Chromium, driven by Playwright,
through JupyterLab started by `runbook notebook` on a free loopback port, inside the private network
namespace.

The lab part the exercise asks about is real: a distribution registry seeded with the lab images behind the
Docker Hub stand-in (token service, rate-limit headers). A learner's session: open the exercises notebook,
run its cells up to Exercise 1, type the number of pulls left, run the check cell and see "right"; type
another number and see "wrong"; spend one pull on the hub and the same answer is now "wrong" (the check asks
the lab, not a stored value). The truth is read here from the hub's own ledger. Screenshots go to
test-artifacts/browser/course-*.png (gitignored).

Reuses test_browser.py's Chromium page fixture; `jupyter` below replaces its fixture of the same name for this
module (it serves the course notebook instead of the stage notebooks).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.test_browser import ARTIFACTS, Jupyter, _params, running_jupyter
from tests.integration.test_browser import page as page  # the Chromium page fixture
from tests.support.labkit import needs_registry, upstream_fixture

pytestmark = [pytest.mark.netns, pytest.mark.slow, needs_registry]

NOTEBOOK = "04_exercises.ipynb"
SOURCE = "127.0.0.1"  # every local client is charged to this address, the kernel's HEADs too (not pulls)

upstream = pytest.fixture(scope="module")(upstream_fixture)


@pytest.fixture(scope="module")
def params_file(upstream, tmp_path_factory) -> Path:
    """A runbook parameters file whose docker.io upstream is the lab Docker Hub of `upstream`."""
    tmp = tmp_path_factory.mktemp("course")
    data = _params(tmp, "http://127.0.0.1:9", tmp / "nexus")
    data["target"] = "course-lab"
    data["upstreams"][0]["remote_url"] = upstream.url
    path = tmp / "course-lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def jupyter(params_file: Path, tmp_path_factory) -> Iterator[Jupyter]:
    """`runbook notebook --params FILE --dir DIR`, DIR holding a copy of the course's exercises."""
    from runbook_lab.course import notebooks_dir

    tmp = tmp_path_factory.mktemp("jupyter-course")
    for plugin, name, value in (
        ("@jupyterlab/apputils-extension", "notification", {"fetchNews": "false"}),
        ("@jupyterlab/notebook-extension", "tracker", {"windowingMode": "none"}),  # every cell in the page
    ):
        folder = tmp / "settings" / plugin
        folder.mkdir(parents=True)
        (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    shutil.copyfile(notebooks_dir() / NOTEBOOK, notebooks / NOTEBOOK)
    with running_jupyter(tmp, ["--params", str(params_file), "--dir", str(notebooks)], notebooks) as lab:
        yield lab


def remaining(upstream) -> int:
    hub = upstream.hub
    return hub.ledger.remaining(SOURCE, hub.config.limit, hub.config.window_s)


def spend_one_pull(upstream) -> None:
    """One manifest GET on the hub, as any client behind the same address would make."""
    challenge = httpx.get(f"{upstream.url}/v2/").headers["www-authenticate"]
    realm = re.search(r'realm="([^"]+)"', challenge).group(1)
    scope = "repository:library/busybox:pull"
    token = httpx.get(realm, params={"service": "registry.docker.io", "scope": scope}).json()["token"]
    resp = httpx.get(
        f"{upstream.url}/v2/library/busybox/manifests/lab",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    assert resp.status_code == 200, resp.status_code


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"course-{name}.png"), full_page=True)


def answer(pg, cells, index: int, text: str) -> str:
    """Type `text` into the answer cell, run it and the check cell below; the check cell's output."""
    cells.nth(index).locator(".cm-content").click()
    pg.keyboard.press("Control+a")
    pg.keyboard.type(text)
    pg.keyboard.press("Shift+Enter")  # runs the answer, selects the check cell
    check = cells.nth(index + 1)
    check.locator(".jp-InputArea-editor").click()  # edit mode in the check cell, so Shift+Enter runs it
    before = check.locator(".jp-InputPrompt").inner_text()
    pg.keyboard.press("Shift+Enter")
    pg.wait_for_function(  # a new execution count: this run's output, not the last one's
        "([el, before]) => { const p = el.querySelector('.jp-InputPrompt').innerText;"
        " return p !== before && !p.includes('*') && el.querySelector('.jp-OutputArea-output'); }",
        arg=[check.element_handle(), before],
        timeout=60_000,
    )
    return check.locator(".jp-OutputArea-output").first.inner_text()


def test_a_course_exercise_checked_against_the_lab_in_the_browser(page, jupyter: Jupyter, upstream) -> None:
    import nbformat

    nb = nbformat.read(jupyter.notebooks / NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.source.startswith("answer_1 = None"))
    assert nb.cells[index + 1].source.startswith('ok = check_answer("dockerhub-remaining"')

    page.goto(f"{jupyter.url}/lab/tree/{NOTEBOOK}?token={jupyter.token}")
    page.locator(".jp-Notebook").wait_for()
    page.get_by_text(re.compile(r"eks-mirror-runbook\) \| Idle")).wait_for()
    cells = page.locator(".jp-Notebook .jp-Cell")
    assert cells.count() == len(nb.cells)
    cells.nth(0).click()
    for _ in range(index):  # run every cell above the exercise's answer cell, top to bottom
        page.keyboard.press("Shift+Enter")
    headers = cells.nth(index - 1).locator(".jp-OutputArea-output")
    page.wait_for_function(
        "el => el.innerText.includes('ratelimit-remaining')", arg=headers.element_handle(), timeout=60_000
    )
    assert not page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']").count()
    shot(page, "1-headers")

    truth = remaining(upstream)
    assert f"ratelimit-remaining: {truth};w=" in headers.inner_text()  # what the learner reads
    out = answer(page, cells, index, f"answer_1 = {truth}")
    assert out.startswith(f"right: {truth}"), out
    shot(page, "2-right")

    out = answer(page, cells, index, f"answer_1 = {truth + 1}")
    assert out.startswith("wrong:") and "Hint:" in out, out
    shot(page, "3-wrong")

    spend_one_pull(upstream)  # the lab changed: the answer that was right is wrong now
    assert remaining(upstream) == truth - 1
    out = answer(page, cells, index, f"answer_1 = {truth}")
    assert out.startswith("wrong:"), out
    out = answer(page, cells, index, f"answer_1 = {truth - 1}")
    assert out.startswith(f"right: {truth - 1}"), out
    shot(page, "4-right-after-a-pull")
