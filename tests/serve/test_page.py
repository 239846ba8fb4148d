"""The page of ``gramx serve`` in a real browser: ``gramx serve`` under uvicorn on a free port, Debian's
headless Chromium driven by playwright (``scripts/setup.sh`` installs it; no browser download).

Load the page, type a query, see the result cards of the API's answer, play an audio hit,
drop a photo; a screenshot in the test's folder.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import time

import httpx
import pytest
from fixture_digits import finish, gramx

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh installs it)")]


def wait_for_port(port: int, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, finish(proc)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"gramx serve did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def server(digits_index, tmp_path_factory):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    proc = gramx("serve", str(digits_index.model), "--index", str(digits_index.index), "--port", str(number),
                 "--device", "cpu", cwd=tmp_path_factory.mktemp("serve"))
    try:
        wait_for_port(number, proc)
        yield f"http://127.0.0.1:{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server)
        page.wait_for_selector("#candidates input")
        yield page
        browser.close()


def card_ids(page, count: int) -> list[str]:
    page.wait_for_function(f"document.querySelectorAll('.card').length === {count}")
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.id)")


def test_a_typed_query_shows_the_apis_hits_and_an_audio_hit_plays(page, server, tmp_path):
    page.fill("#k", "5")
    page.fill("#query", "seven")
    page.press("#query", "Enter")
    shown = card_ids(page, 5)
    api = httpx.get(f"{server}/api/search", params={"q": "seven", "modality": "audio,image", "k": 5}).json()
    assert shown == [h["id"] for h in api["hits"]]
    assert page.locator(".card").first.locator("img").count() == 1
    played = page.evaluate("""async () => {
        const audio = document.querySelector('.card audio');
        let playing = false;
        audio.addEventListener('playing', () => { playing = true; });
        await audio.play();
        const paused = audio.paused;
        await new Promise(done => setTimeout(done, 400));
        return {paused, playing, time: audio.currentTime};
    }""")
    assert played["paused"] is False and played["playing"] and played["time"] > 0, played  # the clips last ~0.3 s
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert (tmp_path / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dropped_photo_is_a_query(page, server, digits_index):
    row = json.loads(digits_index.manifest.read_text().splitlines()[2])
    photo = digits_index.manifest.parent / row["image"]
    page.fill("#k", "4")
    page.uncheck("#candidates input[value=image]")
    dropped = page.evaluate_handle("""([name, data]) => {
        const transfer = new DataTransfer();
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
        return transfer;
    }""", [photo.name, base64.b64encode(photo.read_bytes()).decode()])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('4 results')")
    shown = card_ids(page, 4)
    with photo.open("rb") as f:
        api = httpx.post(f"{server}/api/search", files={"file": (photo.name, f)},
                         data={"query_modality": "image", "modality": "audio", "k": "4"}).json()
    assert shown == [h["id"] for h in api["hits"]]
    assert page.input_value("#query-modality") == "image"
