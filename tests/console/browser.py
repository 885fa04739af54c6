"""Drives the console example in headless Chromium (Playwright, the system browser).

Usage: browser.py URL DEVICES SCREENSHOT

Opens the console of a running `console` example, sees every device connected, runs a
query and its error case, starts a firmware-update job over the devices on 1.0 and
watches it complete, sees the chart change, and sees a refused resume of the live view
(409) followed by a fresh subscription. Exits non-zero (with the reason) on the
first expectation that does not hold; saves a screenshot at the end.
"""
import shutil
import sys
import time

from playwright.sync_api import expect, sync_playwright

url, devices, screenshot = sys.argv[1], int(sys.argv[2]), sys.argv[3]
browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
if browser_path is None:
    sys.exit("no chromium on PATH")

# Every expectation polls until it holds; 30 s (not Playwright's 5 s) for a loaded machine,
# where the page's requests, the hub and the devices may all be slow.
expect.set_options(timeout=30_000)

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)

    # Every device connected: the header counts them, the table shows the first page.
    expect(page.locator("#stats")).to_contain_text(
        f"{devices} of {devices} devices connected", timeout=60_000
    )
    shown = min(devices, 50)
    expect(page.locator("#devices tr")).to_have_count(shown)
    expect(page.locator("#devices td.Connected")).to_have_count(shown, timeout=30_000)
    expect(page.locator("#live")).to_contain_text("live")

    # A query and its error case (the message names line and column).
    page.click("#run")
    expect(page.locator("#query-result")).to_contain_text("BatteryLevel")
    page.fill("#query", '{"filter": {"type": "comparison", "comparisonOperator": "lt",\n "property": {"name": "BatteryLevel", "type": "devise"}, "value": 20}}')
    page.click("#run")
    expect(page.locator("#query-error")).to_contain_text("line 2, column")
    expect(page.locator("#query-error")).to_contain_text("devise")

    # The chart before: how many devices run 1.0 and 2.0, once it counts every device
    # (a version comes with the sync after the registration, and the chart is re-read
    # 300 ms after a change: on a loaded machine later than the connections show).
    expect(page.locator('#chart g[data-version="1.0"]')).to_have_count(1)
    deadline = time.time() + 60
    while True:
        counts = page.locator("#chart g[data-version]").evaluate_all(
            "gs => gs.map((g) => Number(g.dataset.count))"
        )
        if sum(counts) == devices:
            break
        assert time.time() < deadline, f"the chart never counted every device: {counts}"
        page.wait_for_timeout(100)
    on_1_0 = int(page.locator('#chart g[data-version="1.0"]').get_attribute("data-count"))
    assert on_1_0 > 0, "the fleet has devices on 1.0"
    assert page.locator('#chart g[data-version="2.0"]').count() == 0

    # A firmware update over the devices on 1.0, watched to completion.
    page.click("#start-job")
    expect(page.locator("#job-status")).to_have_attribute("data-status", "completed", timeout=120_000)
    expect(page.locator("#children tr")).to_have_count(on_1_0)
    expect(page.locator("#children td.completed")).to_have_count(on_1_0)
    progress = page.locator("#job-progress")
    expect(progress).to_have_attribute("value", str(on_1_0))
    expect(progress).to_have_attribute("max", str(on_1_0))
    expect(page.locator("#history tr")).to_have_count(1)

    # The chart follows: the 1.0 bar is gone, a 2.0 bar holds those devices.
    expect(page.locator('#chart g[data-version="2.0"]')).to_have_attribute(
        "data-count", str(on_1_0), timeout=30_000
    )
    expect(page.locator('#chart g[data-version="1.0"]')).to_have_count(0)

    # A twin view.
    page.locator("#devices tr").first.click()
    expect(page.locator("#twin")).to_contain_text('"deviceId": "device-00000"')

    # A live view the hub refuses to resume (409: the id it last saw is not in this hub's
    # history, as after a restart without a store) re-reads everything and subscribes
    # afresh. Provoked by handing the page one made-up event whose id this hub never
    # handed out (below where its numbers start, as an earlier run's would be), then
    # ending that stream: the browser resumes from that id.
    statuses = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if "/api/events" in r.url else None,
    )
    page.route(
        "**/api/events*",
        lambda route: route.fulfill(
            status=200,
            headers={"content-type": "text/event-stream"},
            body='retry: 200\nid: 999999999999\ndata: {"type":"none"}\n\n',
        ),
        times=1,
    )
    page.evaluate("connect()")
    expect(page.locator("#live")).to_contain_text("live", timeout=10_000)
    deadline = time.time() + 20
    # The made-up stream (200), the refused resume (409), the fresh subscription (200).
    while statuses[:3] != [200, 409, 200]:
        assert time.time() < deadline, f"no refused resume and fresh subscription: {statuses}"
        page.wait_for_timeout(100)
    expect(page.locator("#live")).to_contain_text("● live", timeout=10_000)

    page.screenshot(path=screenshot, full_page=True)
    browser.close()
    if errors:
        sys.exit(f"the page raised: {errors}")
print(f"console ok: {devices} devices connected, query and error shown, job over {on_1_0} devices completed, chart moved, refused resume resynced")
