"""Signing in and the VM list, in a real browser against a real gateway (libvirt's test
driver: one VM named ``test``)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from webkit import Site


async def test_signs_in_from_the_printed_url_and_lists_vm_test(site: Site, new_page: Any) -> None:
    page, problems = await new_page()
    token = site.server.token("dev")
    await page.goto(site.page_url(token))
    row = page.locator('tr[data-vm="test"]')
    await expect(row.locator(".badge")).to_have_text("running")
    await expect(page.locator("#conn-state")).to_have_text("connected")
    await expect(page.locator("#whoami")).to_contain_text("dev")
    # the token left the address at once and lives in sessionStorage only
    assert "token" not in page.url
    assert await page.evaluate("sessionStorage.getItem('virtwire.token')") == token
    # live figures from the test driver (2 vCPUs busy: 50 %)
    await expect(row.locator("td.num").first).to_contain_text("%")
    await expect(row.locator("td.net")).to_contain_text("/s")
    await site.shot(page, "signed-in")
    # a reload keeps the session (sessionStorage), still without a token in the address
    await page.reload()
    await expect(row.locator(".badge")).to_have_text("running")
    assert "token" not in page.url
    assert problems == []


async def test_pause_and_resume_change_the_badge_and_feed_the_events(
    site: Site, new_page: Any
) -> None:
    page, problems = await new_page()
    await page.goto(site.page_url(site.server.token("alice")))
    row = page.locator('tr[data-vm="test"]')
    badge = row.locator(".badge")
    await expect(badge).to_have_text("running")
    await row.get_by_role("button", name="Pause test", exact=True).click()
    await expect(badge).to_have_text("paused")
    event = page.locator('#event-list li[data-event="vm-paused"]')
    await expect(event).to_contain_text("test")
    await expect(event).to_contain_text("by alice")
    await site.shot(page, "paused")
    await row.get_by_role("button", name="Resume test", exact=True).click()
    await expect(badge).to_have_text("running")
    await expect(page.locator('#event-list li[data-event="vm-resumed"]')).to_contain_text("alice")
    # nothing pending once the vm-control-response came
    await expect(row).not_to_have_attribute("data-pending", "pause")
    await expect(row.locator(".row-note")).to_have_text("")
    assert problems == []


async def test_a_refused_action_shows_its_error_in_the_row_and_as_a_dismissable_notice(
    site: Site, new_page: Any
) -> None:
    page, _ = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    row = page.locator('tr[data-vm="test"]')
    await expect(row.locator(".badge")).to_have_text("running")
    await row.get_by_role("button", name="Start test", exact=True).click()  # already running
    await expect(row.locator(".row-note.error")).not_to_be_empty()
    notice = page.locator("#notices .notice.error")
    await expect(notice).to_contain_text("VM_START_FAILED")
    await site.shot(page, "error-notice")
    await notice.get_by_role("button", name="Dismiss notice", exact=True).click()
    await expect(notice).to_have_count(0)
    # the buttons are usable again after the failure
    await expect(row.get_by_role("button", name="Pause test", exact=True)).to_be_enabled()


async def test_force_stop_asks_first(site: Site, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(site.page_url(site.server.token("dev")))
    row = page.locator('tr[data-vm="test"]')
    badge = row.locator(".badge")
    await expect(badge).to_have_text("running")
    await row.get_by_role("button", name="Force stop test", exact=True).click()
    dialog = page.locator("dialog#confirm")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Power off test")
    await site.shot(page, "force-stop-confirm")
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator('#event-list li[data-event="vm-stopped"]')).to_have_count(0)
    assert await badge.text_content() == "running"
    await row.get_by_role("button", name="Force stop test", exact=True).click()
    await dialog.get_by_role("button", name="Power off", exact=True).click()
    await expect(badge).to_have_text("stopped")
    await expect(page.locator('#event-list li[data-event="vm-stopped"]')).to_have_count(1)
    # test:///default keeps its state while any connection of the process is open: leave
    # `test` running for the next test
    await row.get_by_role("button", name="Start test", exact=True).click()
    await expect(badge).to_have_text("running")


async def test_buttons_the_token_does_not_allow_are_disabled_not_hidden(
    site: Site, new_page: Any
) -> None:
    page, _ = await new_page()
    reader = site.server.token("reader", ["vm:read", "monitor:read", "logs:read"])
    await page.goto(site.page_url(reader))
    row = page.locator('tr[data-vm="test"]')
    await expect(row.locator(".badge")).to_have_text("running")
    buttons = row.locator(".actions button")
    await expect(buttons).to_have_count(8)
    for action in ("start", "stop", "restart", "pause", "resume", "reset", "force-stop"):
        button = row.locator(f'button[data-action="{action}"]')
        await expect(button).to_be_visible()
        await expect(button).to_be_disabled()
        await expect(button).to_have_attribute("title", "this token lacks the vm:control scope")
    await expect(row.locator('button[data-action="console"]')).to_be_disabled()
    await site.shot(page, "read-only")

    # vm:control, but a vms claim that does not include `test`
    page2, _ = await new_page()
    other = site.server.token("bob", ["vm:read", "vm:control"], vms=["web-*", "tes"])
    await page2.goto(site.page_url(other))
    # the gateway does not show `test` to bob at all; a claim that includes it enables them
    await expect(page2.locator("#vms-empty")).to_be_visible()
    await expect(page2.locator('tr[data-vm="test"]')).to_have_count(0)
    page3, _ = await new_page()
    await page3.goto(
        site.page_url(site.server.token("carol", ["vm:read", "vm:control"], vms=["t*"]))
    )
    pause = page3.locator('tr[data-vm="test"] button[data-action="pause"]')
    await expect(pause).to_be_enabled()


async def test_a_bad_token_shows_the_sign_in_error_and_a_good_one_signs_in_by_keyboard(
    site: Site, new_page: Any
) -> None:
    page, problems = await new_page()
    await page.goto(site.page_url("not-a-jwt"))
    error = page.locator("#signin-error")
    await expect(error).to_contain_text("Sign-in failed")
    await expect(error).to_contain_text("AUTH_FAILED")
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('virtwire.token')") is None
    assert "token" not in page.url
    await site.shot(page, "sign-in-error")
    # keyboard only: the token field has the focus; type, Enter
    await expect(page.locator("#token-input")).to_be_focused()
    await page.keyboard.type(site.server.token("kim"))
    await page.keyboard.press("Enter")
    row = page.locator('tr[data-vm="test"]')
    await expect(row.locator(".badge")).to_have_text("running")
    # Tab through the page to the Pause button of `test` and press it with the keyboard
    pause = row.locator('button[data-action="pause"]')
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await pause.evaluate("el => el === document.activeElement"):
            break
    await expect(pause).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(row.locator(".badge")).to_have_text("paused")
    # the focus stays on the button after the row re-rendered
    await expect(pause).to_be_focused()
    await row.get_by_role("button", name="Resume test", exact=True).click()
    await expect(row.locator(".badge")).to_have_text("running")
    # sign out: back to the sign-in form, token forgotten
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('virtwire.token')") is None
    assert problems == []


async def test_expired_token_is_refused_with_its_reason(site: Site, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(site.page_url(site.server.token("old", ttl=-60)))
    await expect(page.locator("#signin-error")).to_contain_text("TOKEN_EXPIRED")
