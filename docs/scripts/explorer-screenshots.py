"""The screenshots of docs/explorer.md: each run served, the page opened in headless Chromium
(Playwright), moved a little, and photographed.

    python docs/scripts/explorer-screenshots.py RUN_2D RUN_20D RUN_CVAE OUT_DIR
"""

import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from aevb.serve.explorer import Explorer
from aevb.serve.server import make_server


def shoot(run: str, out: Path, browser, action) -> None:
    server = make_server(Explorer(run))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    page = browser.new_page(viewport={"width": 1180, "height": 1000})
    page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
    page.wait_for_selector("#sliders input")
    action(page)
    page.wait_for_timeout(800)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out), full_page=True)
    page.close()
    server.shutdown()


def drag_and_interpolate(page) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.3, steps=6)
    page.mouse.up()
    page.locator("#to").fill("3")
    page.locator("#steps").fill("12")
    page.locator("#mode").select_option("slerp")
    page.locator("#interpolate").click()
    page.locator("#draw").scroll_into_view_if_needed()
    canvas = page.locator("#draw").bounding_box()
    page.mouse.move(canvas["x"] + 100, canvas["y"] + 30)
    page.mouse.down()
    page.mouse.move(canvas["x"] + 100, canvas["y"] + 170, steps=10)
    page.mouse.up()
    page.locator("#encode").click()


def pick_class(page) -> None:
    page.locator("#label").select_option("3")
    drag_and_interpolate(page)


if __name__ == "__main__":
    run_2d, run_20d, run_cvae, out = sys.argv[1:5]
    out_dir = Path(out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        shoot(run_2d, out_dir / "explorer-vae-2d.png", browser, drag_and_interpolate)
        shoot(run_20d, out_dir / "explorer-vae-20d.png", browser, drag_and_interpolate)
        shoot(run_cvae, out_dir / "explorer-cvae.png", browser, pick_class)
        browser.close()
