"""The web page in Debian's headless Chromium, driven by Playwright, against `bindindex serve`.

The whole path is real: the CLI starts uvicorn in a subprocess over an index of
the paired corpus built with the tiny imagebind-test model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from bindindex.index import Index

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: these flags keep Chromium from trying to reach one.
CHROMIUM_ARGS = [
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, paired: Path) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser")
    with Index.open(folder / "index", model="imagebind-test") as index:
        report = index.add_paths([paired])
    assert report.failed == 0
    port = free_port()
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bindindex", "serve"),
            *("--index", str(folder / "index"), "--port", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "BINDINDEX_HOME": str(folder / "home")},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (folder / "serve.log").read_text()
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "bindindex serve did not answer within 60 s"
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium package")
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        # Chromium's sandbox cannot start as root.
        args.append("--no-sandbox")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def assert_not_blank(screenshot: Path, min_colours: int) -> None:
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours >= min_colours, f"{screenshot} has only {colours} colours"
    assert float(pixels.std()) > 20, f"{screenshot} is nearly one colour"


def loaded_images(page: Page, selector: str) -> int:
    return int(
        page.eval_on_selector_all(
            selector, "images => images.filter(i => i.complete && i.naturalWidth > 0).length"
        )
    )


def test_sound_finds_images_and_cluster_opens(
    server: str, page: Page, paired: Path, tmp_path: Path
) -> None:
    p = page
    p.goto(server)
    p.wait_for_function("document.querySelector('#info').textContent.includes('vectors')")
    assert "meaningless" in p.text_content("#info") or "carry no meaning" in p.text_content("#info")

    # Upload a sound through the drop zone's file input, asking for images only.
    p.select_option("#modality", "image")
    p.set_input_files("#file-input", str(paired / "dog" / "audio" / "imagebind_dog.wav"))
    p.wait_for_selector("#results .card img")
    p.wait_for_function(
        "[...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    cards = p.query_selector_all("#results .card")
    assert len(cards) == 12
    assert loaded_images(p, "#results .card img") == 12
    assert "imagebind_dog.wav" in p.text_content("#query-summary")
    assert p.is_hidden("#error")
    search_shot = tmp_path / "search.png"
    p.screenshot(path=str(search_shot), full_page=True)
    # Text and flat boxes give a few hundred colours; twelve photo thumbnails give thousands.
    assert_not_blank(search_shot, min_colours=2000)

    # "More like this" on the first result runs an item search.
    first_path = p.text_content("#results .card .path")
    p.click("#results .card .more")
    p.wait_for_function(
        "document.querySelector('#query-summary').textContent.includes('results for items like')"
    )
    assert first_path in p.text_content("#query-summary")

    # Run K-Means from the clusters view and open the first cluster.
    p.click("#tab-clusters")
    p.fill("#cluster-k", "7")
    p.click("#cluster-form button")
    p.wait_for_selector("#run-detail details.cluster")
    assert len(p.query_selector_all("#runs tbody tr")) == 1
    assert "purity" in p.text_content("#run-detail .metrics")
    summaries = p.query_selector_all("#run-detail details.cluster summary")
    assert len(summaries) == 7
    concepts = {folder.name for folder in paired.iterdir()}
    first_summary = summaries[0].text_content()
    assert any(concept in first_summary for concept in concepts), first_summary
    summaries[0].click()
    p.wait_for_selector("#run-detail details.cluster[open] .card")
    cluster_shot = tmp_path / "cluster.png"
    p.screenshot(path=str(cluster_shot), full_page=True)
    assert_not_blank(cluster_shot, min_colours=20)
    members = p.query_selector_all("#run-detail details.cluster[open] .card")
    assert len(members) > 0
