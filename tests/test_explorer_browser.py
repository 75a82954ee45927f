"""The explorer in a real browser: headless Chromium (Debian's ``chromium``, which ``.ci/run``
installs) driven by Playwright. The page loads, the pad is dragged and the image changes, a
slider moves, a class is picked, an interpolation is drawn, a drawn digit is encoded.

Skipped, with the reason, where Chromium or Playwright is missing (``pip install -e
.[browser]``); CI has both.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine.loop import train
from aevb.serve.explorer import Explorer
from aevb.serve.server import make_server

CHROMIUM = os.environ.get("AEVB_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
if os.environ.get("AEVB_REQUIRE_BROWSER"):  # CI: a missing browser is a failure, not a skip
    from playwright import sync_api as playwright_api

    assert CHROMIUM, "AEVB_REQUIRE_BROWSER is set and there is no chromium"
else:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e .[browser]")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install chromium")
TINY = {"dataset": "digits", "epochs": "2", "hidden": "32", "threads": "1",
        "precision": "float32", "is_samples": "4"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    servers = {}
    for name, overrides in {"vae": {"model": "vae", "latent_dim": "4"},
                            "cvae": {"model": "cvae", "latent_dim": "2"}}.items():
        train(apply_overrides(Config(), {**TINY, **overrides}), tmp / name, progress=False)
        server = make_server(Explorer(tmp / name))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers[name] = server
    yield {name: f"http://127.0.0.1:{s.server_address[1]}/" for name, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"])
        yield chromium
        chromium.close()


def pixels(page, selector: str) -> np.ndarray:
    """The image an <img> shows, as the browser decoded it."""
    page.wait_for_function(f"document.querySelector('{selector}').complete &&"
                           f" document.querySelector('{selector}').naturalWidth > 0")
    data = page.evaluate(f"""() => {{
        const img = document.querySelector('{selector}');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        return c.toDataURL('image/png');
    }}""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",")[1]))).convert("L"))


def settle(page) -> None:
    page.wait_for_function("document.querySelector('#decoded').complete")
    page.wait_for_timeout(300)


def test_the_pad_the_sliders_the_scatter_interpolation_and_drawing(browser, served):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served["vae"])
    page.wait_for_selector("#sliders input")
    assert page.locator("#sliders input").count() == 4
    settle(page)
    at_zero = pixels(page, "#decoded")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] * 0.05, steps=8)
    page.mouse.up()
    settle(page)
    dragged = pixels(page, "#decoded")
    assert np.abs(dragged.astype(int) - at_zero).sum() > 0, "the pad moved the image"
    page.locator("#sliders input").nth(3).fill("-2.5")  # the dimension with the least KL
    page.locator("#sliders input").nth(0).fill("2.9")
    settle(page)
    assert np.abs(pixels(page, "#decoded").astype(int) - dragged).sum() > 0, "a slider moved it"

    page.locator("#scatter").scroll_into_view_if_needed()
    scatter = page.locator("#scatter").bounding_box()
    page.mouse.click(scatter["x"] + scatter["width"] * 0.5, scatter["y"] + scatter["height"] * 0.5)
    settle(page)
    chosen = int(page.locator("#from").input_value())
    code = page.evaluate(f"() => state.codes.codes[{chosen}]")
    assert page.evaluate("() => state.z") == code, "a click jumps to the nearest test code"

    page.locator("#to").fill("7")
    page.locator("#steps").fill("6")
    page.locator("#interpolate").click()
    page.wait_for_function("document.querySelector('#strip').naturalWidth > 0")
    assert page.evaluate("document.querySelector('#strip').naturalWidth") == 8 * 6

    page.locator("#draw").scroll_into_view_if_needed()
    canvas = page.locator("#draw").bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + 20)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] - 20,
                    steps=10)
    page.mouse.up()
    drawn = page.evaluate("""() => {
        const c = document.querySelector('#draw');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let white = 0;
        for (let i = 0; i < data.length; i += 4) white += data[i] > 128;
        return white;
    }""")
    assert drawn > 500, "the stroke is on the canvas"
    before = page.evaluate("() => state.z.slice()")
    page.locator("#encode").click()
    page.wait_for_function("document.querySelector('#reconstruction').naturalWidth > 0")
    assert page.evaluate("() => state.z") != before, "the drawing's code is taken"
    assert pixels(page, "#reconstruction").shape == (8, 8)
    assert page.locator("#error").inner_text() == ""
    assert not errors, errors
    page.close()


def test_a_class_is_picked(browser, served):
    page = browser.new_page()
    page.goto(served["cvae"])
    page.wait_for_selector("#label option", state="attached")
    assert page.locator("#label option").count() == 10
    settle(page)
    zero = pixels(page, "#decoded")
    page.locator("#label").select_option("8")
    settle(page)
    assert np.abs(pixels(page, "#decoded").astype(int) - zero).sum() > 0
    page.close()
