"""The host charts, the log pane and the console pane."""

from __future__ import annotations

import os
from typing import Any

from playwright.async_api import expect
from webkit import Site


async def test_host_charts_update(site: Site, new_page: Any) -> None:
    page, problems = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    cpu = page.locator("#chart-cpu")
    # each system-monitor frame adds a sample to every chart and redraws it
    await expect(cpu).to_have_attribute("data-samples", "2", timeout=10_000)
    for chart in ("#chart-cpu", "#chart-mem", "#chart-disk", "#chart-net"):
        await expect(page.locator(f"{chart} canvas")).to_have_count(1)
        assert int(await page.locator(chart).get_attribute("data-samples") or 0) >= 2
    await expect(page.locator("#mem-now")).to_contain_text("GiB")
    await expect(page.locator("#cpu-now")).to_contain_text("%")
    cores = await page.evaluate("document.querySelector('#cpu-now').textContent")
    assert cores.count("/") == (os.cpu_count() or 1) - 1  # one figure per core
    await site.shot(page, "host-charts")
    assert problems == []


async def test_log_pane_follows_pauses_filters_and_shows_notices(
    site_factory: Any, new_page: Any
) -> None:
    # the default locale (zh-CN): the texts existing log viewers match
    async with site_factory(locale="zh-CN") as site:
        await follow_pause_filter_and_notices(site, new_page)


async def follow_pause_filter_and_notices(site: Site, new_page: Any) -> None:
    page, problems = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    lines = page.locator("#log-lines")
    await expect(lines.locator(".line").last).to_have_text("boot line 4")
    # a line written to the served file appears
    with site.log_file.open("a") as f:
        f.write("hello from the test\n")
    await expect(lines.locator(".line").last).to_have_text("hello from the test")

    # pause: new lines are held, not shown; follow shows them
    await page.get_by_role("button", name="Pause", exact=True).click()
    with site.log_file.open("a") as f:
        f.write("held while paused\n")
    await expect(page.locator("#log-state")).to_contain_text("1 new lines held")
    await expect(lines.get_by_text("held while paused")).to_have_count(0)
    await page.get_by_role("button", name="Follow", exact=True).click()
    await expect(lines.locator(".line").last).to_have_text("held while paused")

    # filter: only matching lines stay visible
    await page.locator("#log-filter").fill("boot line 3")
    await expect(lines.locator(".line:visible")).to_have_count(1)
    await expect(lines.locator(".line:visible")).to_have_text("boot line 3")
    await page.locator("#log-filter").fill("")
    await expect(lines.get_by_text("hello from the test")).to_be_visible()

    # truncation: shown as a notice, then the new content
    site.log_file.write_text("after truncation\n")
    truncated = lines.locator('.notice[data-kind="truncated"]')
    await expect(truncated).to_have_count(1)
    await expect(truncated).to_contain_text("日志文件被截断")
    await expect(lines.locator(".line").last).to_have_text("after truncation")
    await site.shot(page, "logs-truncated")

    # deletion: shown as such, and the stream ends (no reconnect loop)
    site.log_file.unlink()
    deleted = lines.locator('.notice[data-kind="deleted"]')
    await expect(deleted).to_have_count(1, timeout=10_000)
    await expect(deleted).to_contain_text("日志文件 app.log 不再存在")
    await expect(page.locator("#log-state")).to_contain_text("stream ended (1000)")
    await site.shot(page, "logs-deleted")
    assert problems == []


async def test_a_name_off_the_allow_list_is_refused_clearly(site: Site, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    await expect(page.locator("#log-lines .line").last).to_have_text("boot line 4")
    await page.locator("#log-file").fill("../etc/passwd")
    await page.get_by_role("button", name="Open", exact=True).click()
    forbidden = page.locator('#log-lines .notice[data-kind="forbidden"]')
    await expect(forbidden).to_contain_text("../etc/passwd")
    await expect(page.locator("#log-state")).to_contain_text("stream ended (1008)")


async def test_console_pane_says_clearly_when_there_is_no_console(
    site: Site, new_page: Any
) -> None:
    page, _ = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    row = page.locator('tr[data-vm="test"]')
    await row.get_by_role("button", name="Console of test", exact=True).click()
    message = page.locator('#console-body .console-message[data-kind="none"]')
    # neither a screen (vnc-connect) nor a serial console (terminal-connect serial)
    await expect(message).to_contain_text("No console for test: no screen and no serial console")
    await expect(message).to_contain_text("test driver")
    await expect(message).to_contain_text("serial: ")
    await expect(message).to_contain_text("(CONSOLE_UNAVAILABLE)")
    await expect(page.locator("#console-title")).to_have_text("Console: test")
    await site.shot(page, "console-none")
