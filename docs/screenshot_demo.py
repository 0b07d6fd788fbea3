"""Screenshot of `minimodal demo` in a real headless browser, after asking it for a picture (docs/demo_page.png).

    pip install playwright      # the Python driver only: it uses the system's Chromium, downloads nothing
    python docs/screenshot_demo.py --runs runs [--chromium /usr/bin/chromium] [--out docs/demo_page.png]

Starts the page, types a request, clicks "ask", waits for the pictures, saves the screenshot.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from minimodal import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", default="docs/demo_page.png")
    parser.add_argument("--request", default="could you sketch me a little crimson ball up in the left corner?")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = demo.build(args.runs)
    threading.Thread(target=lambda: app.launch(server_port=port, server_name="127.0.0.1", prevent_thread_lock=True,
                                               quiet=True), daemon=True).start()
    time.sleep(5)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
        page.get_by_label("request").fill(args.request)
        page.get_by_role("button", name="ask").click()
        page.wait_for_selector("img[src*='png']", timeout=300_000)
        time.sleep(2)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    app.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
