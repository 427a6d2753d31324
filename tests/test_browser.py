"""The attention explorer in a real browser: JupyterLab on loopback, driven by headless Chromium through Playwright.

Runs a copy of ``notebooks/09_attention_explorer.ipynb`` (repository paths made absolute, two training iterations
when notebook 07's checkpoint is missing) with Run All, moves the query slider from the keyboard, and checks from
screenshots that the widget rendered and that its attention image changed. Uses Debian's ``chromium`` package
(``make test`` installs it where it can) through Playwright's ``executable_path``, never a downloaded browser, and
skips, saying why, where either is missing. Screenshots are left in the test's ``tmp_path``.
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from anncore.course.runner import declared_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "09_attention_explorer.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
TOKEN = "ann-browser-test"
# every code cell has run (a number in its prompt) and none is queued or running ("*")
ALL_CELLS_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p));
}"""


def chromium() -> str:
    """Path of the system Chromium, or skip the test."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; `make test` tries to)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not listen on port {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def notebook_copy(folder: Path) -> Path:
    """The committed notebook without outputs (its default CHECKPOINT, the shipped course model, is found through
    the installed package, so the copy runs from any folder)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert declared_parameters(NOTEBOOK)["CHECKPOINT"] == "course"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_explorer_renders_and_follows_the_slider_in_jupyterlab(tmp_path):
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    path = notebook_copy(tmp_path)
    port, log = free_port(), tmp_path / "jupyterlab.log"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}  # fmt: skip
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        wait_for_port(port, server, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{path.name}?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_function("document.body.innerText.includes('| Idle')")  # the kernel is up
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.wait_for_function(ALL_CELLS_RAN, timeout=600_000)  # the quick training runs here
            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's "get Jupyter news?" toast
            if news.count():
                news.first.click()
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert "Traceback" not in " ".join(errors.all_text_contents())
            outputs = page.locator(".jp-OutputArea").all_text_contents()
            assert any(
                "the explorer shows anncore.course.viz's maps: ok" in text for text in outputs
            )  # the closing check
            assert "board-swap follow rate" in outputs[-1]  # and the last cell, what this run measured, ran too

            image = page.locator(".ann-attention-image")
            image.scroll_into_view_if_needed()
            before = image.screenshot(path=tmp_path / "attention_before.png")
            page.screenshot(path=tmp_path / "explorer_before.png")
            source = image.get_attribute("src")
            readout = page.locator(".ann-query-col .widget-readout")
            column = int(readout.inner_text())
            handle = page.locator(".ann-query-col .noUi-handle")
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "source => document.querySelector('.ann-attention-image').getAttribute('src') !== source", arg=source
            )
            page.wait_for_timeout(500)  # let the new image paint
            after = image.screenshot(path=tmp_path / "attention_after.png")
            page.screenshot(path=tmp_path / "explorer_after.png")
            assert int(readout.inner_text()) == column + 3
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernel it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    first, second = pixels(before), pixels(after)
    assert first.shape == second.shape and min(first.shape[:2]) > 100, f"attention image is {first.shape}"
    assert first.std() > 20 and len(np.unique(first.reshape(-1, 3), axis=0)) > 100, "the attention image is blank"
    changed = np.abs(first - second).max(axis=2) > 30
    assert changed.mean() > 0.001, "moving the query slider did not change the attention image"
