"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright against the
GC of a real GC -> RC -> LC tree on the default lab (tests/runtime/hierarchy.py).

Chromium runs inside the GC host's namespace, where the GC listens, and trusts the tree's deployment
CA through an NSS database of its own (no certificate error is ignored). With PDSNO_UI_SHOTS=docs/ui
the screenshots of docs/ui.md are taken again.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pdsno.nib.models import Device, device_id_for_mac
from tests.runtime.hierarchy import (
    World,
    devices,
    gc_api,
    operator_token,
    running_world,
    truth,
    wait_for,
    writable_lcs,
)

PREFIX = "pdsu-"
CHROMIUM = Path("/usr/bin/chromium")
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
GC_ID = "global_cntl_1"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium package is not installed")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("ui"), PREFIX, writable_lcs) as world:
        wait_for(lambda: len(devices(world, "gc-1")) >= len(truth(world)), 90, "the GC inventory")
        yield world


@pytest.fixture(scope="module")
def tokens(world: World) -> dict[str, str]:
    roles = {"olga": "operator", "bob": "approver", "vera": "viewer"}
    return {name: operator_token(world, name, role) for name, role in roles.items()}


@pytest.fixture(scope="module")
def browser(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    home = tmp_path_factory.mktemp("chromium")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for argv in (
        ["-N", "--empty-password"],
        ["-A", "-n", "pdsno test CA", "-t", "C,,", "-i", str(world.root / "pki" / "ca.crt")],
    ):
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", *argv], check=True, capture_output=True, timeout=30)
    # The browser must be where the GC listens: inside the GC host's namespace.
    wrapper = home / "chromium-in-gc"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {world.ns("gc-1")} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=str(wrapper), args=["--no-sandbox"], env={**os.environ, "HOME": str(home)}
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("PDSNO_UI_SHOTS")
    return Path(wanted) if wanted else tmp_path_factory.mktemp("shots")


@dataclass
class Dashboard:
    world: World
    browser: Browser
    tokens: dict[str, str]
    shots: Path
    pages: dict[str, Page] = field(default_factory=dict)

    def page_of(self, name: str) -> Page:
        """A browser of its own per operator, logged in through the form."""
        if name not in self.pages:
            context = self.browser.new_context(
                base_url=self.world.url("gc-1"), viewport={"width": 1400, "height": 900}
            )
            page = context.new_page()
            page.goto("/ui")
            expect(page).to_have_url(re.compile(r"/ui/login\?next="))
            page.fill("#token", self.tokens[name])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("h1")).to_have_text("Devices")
            self.pages[name] = page
        return self.pages[name]

    def shot(self, page: Page, name: str, *, full_page: bool = True) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=full_page)

    def api(self, name: str, method: str, path: str, **kwargs: Any) -> Any:
        with gc_api(self.world, self.tokens[name]) as client:
            return client.request(method, path, **kwargs)

    def propose_medium(self, name: str, device: str, value: str) -> str:
        target = device_id_for_mac(self.world.lab.device(device).mac)
        body = {
            "executor": "snmp",
            "targets": [target],
            "payload": {"set": {SYS_LOCATION: value}},
            "suggested_tier": "MEDIUM",
        }
        made = self.api(name, "POST", "/api/v1/proposals", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "PENDING", made.json()
        proposal_id: str = made.json()["proposal_id"]
        return proposal_id

    def status(self, proposal_id: str) -> str:
        found: str = self.api("vera", "GET", f"/api/v1/proposals/{proposal_id}").json()["status"]
        return found


@pytest.fixture(scope="module")
def ui(world: World, browser: Browser, tokens: dict[str, str], shots: Path) -> Dashboard:
    return Dashboard(world, browser, tokens, shots)


def csrf_of(page: Page) -> str:
    return page.input_value("form.who input[name=csrf]")


def post_form(page: Page, path: str, form: dict[str, str]) -> tuple[int, str]:
    """POST a form from the page's own browser (with its cookies): Playwright's request API would go out
    from outside the GC's namespace."""
    answer: tuple[int, str] = page.evaluate(
        """async ([path, form]) => {
            const r = await fetch(path, {method: "POST", body: new URLSearchParams(form), redirect: "manual"});
            return [r.status, await r.text()];
        }""",
        [path, form],
    )
    return answer


def test_login_takes_a_token_and_issues_a_strict_http_only_session_cookie(ui: Dashboard) -> None:
    context = ui.browser.new_context(base_url=ui.world.url("gc-1"), viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto("/ui/devices")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    ui.shot(page, "login")
    page.fill("#token", "pdsno_not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".error")).to_contain_text("unknown or disabled token")
    assert not [c for c in context.cookies() if c["name"] == "pdsno_session"]

    page.fill("#token", ui.tokens["vera"])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui/devices$"))
    [cookie] = [c for c in context.cookies() if c["name"] == "pdsno_session"]
    assert (
        cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    )
    assert ui.tokens["vera"] not in str(context.cookies()), "the token itself is never a cookie"
    context.close()


def test_an_operator_finds_a_device_by_one_of_its_addresses_and_sees_its_interfaces(ui: Dashboard) -> None:
    page = ui.page_of("olga")
    ui.shot(page, "devices", full_page=False)
    web = ui.world.lab.device("srv-a1-web")
    # Playwright's loop owns this thread, so the NIB is read through the API.
    known = Device.model_validate(
        ui.api("vera", "GET", f"/api/v1/devices/{device_id_for_mac(web.mac)}").json()
    )
    page.fill("input[name=q]", web.addresses[1])
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-device", known.device_id)
    rows.first.locator("a").click()
    expect(page.locator(".addresses li")).to_have_text(web.addresses)
    assert known.interfaces, "discovery read the server's interfaces"
    for interface in known.interfaces:
        expect(page.locator("#interfaces")).to_contain_text(interface.name)
    expect(page.locator("#history")).to_contain_text("DEVICE_DISCOVERED")
    ui.shot(page, "device")


def test_a_discovery_shows_up_on_the_live_feed_and_in_the_table_without_a_reload(ui: Dashboard) -> None:
    page = ui.page_of("olga")
    page.goto("/ui/devices")
    expect(page.locator("#feed-state")).to_have_text("live")
    page.evaluate("window.stayedOnPage = true")
    added = ui.world.lab.add_device({"name": "new-sw-a1", "ip": "198.18.1.77", "profile": "cisco-catalyst"})
    new_id = device_id_for_mac(added.mac)
    asked = ui.api("olga", "POST", "/api/v1/discovery", json={"lc_ids": ["local_cntl_zone-a_1"]})
    assert asked.status_code == 202, asked.text

    arrived = page.locator(f'#feed li.new[data-type="DEVICE_DISCOVERED"][data-subject="{new_id}"]')
    expect(arrived).to_have_count(1, timeout=45_000)
    expect(page.locator(f'#devices tr[data-device="{new_id}"]')).to_have_count(1, timeout=10_000)
    assert page.evaluate("window.stayedOnPage") is True, "the page was not reloaded"
    ui.shot(page, "live-feed", full_page=False)


def test_an_approver_approves_a_medium_change_in_the_ui_and_sees_it_executed(ui: Dashboard) -> None:
    proposal_id = ui.propose_medium("olga", "acc-sw-a1-1", "approved in the dashboard")
    page = ui.page_of("bob")
    page.goto("/ui/proposals")
    expect(page.locator(f'tr[data-proposal="{proposal_id}"]')).to_contain_text("PENDING")
    ui.shot(page, "proposals")
    page.locator(f'tr[data-proposal="{proposal_id}"] a').click()
    expect(page.locator("#tier")).to_have_text("MEDIUM")
    expect(page.locator("#radius")).to_contain_text("zone-a")
    expect(page.locator(".diff")).to_contain_text("approved in the dashboard")
    ui.shot(page, "proposal-pending")

    page.fill("input[name=reason][aria-label='approval note']", "checked the location")
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    page.evaluate("window.stayedOnPage = true")
    # The LC's result comes back as events; the live region shows it without a reload.
    expect(page.locator("#status")).to_have_text("EXECUTED", timeout=45_000)
    assert page.evaluate("window.stayedOnPage") is True
    expect(page.locator("#trail")).to_contain_text("CONFIG_EXECUTED")
    view = ui.api("vera", "GET", f"/api/v1/proposals/{proposal_id}").json()
    assert view["status"] == "EXECUTED" and view["approved_by"] == "bob", view
    device = ui.world.lab.device("acc-sw-a1-1")
    read = ui.world.lab.exec_in(device.lc, ["snmpget", "-Oqv", "-t", "1", "-r", "1", "-v2c", "-c", str(device.community),
                                            device.addresses[0], SYS_LOCATION], timeout=15)  # fmt: skip
    assert read.stdout.strip().strip('"') == "approved in the dashboard"
    ui.shot(page, "proposal-executed")


def test_a_viewer_has_no_approve_button_and_the_server_refuses_their_approval(ui: Dashboard) -> None:
    proposal_id = ui.propose_medium("olga", "acc-sw-a1-2", "never by a viewer")
    page = ui.page_of("vera")
    page.goto(f"/ui/proposals/{proposal_id}")
    expect(page.locator("#no-decision")).to_contain_text("needs the approver role")
    expect(page.locator("#approve")).to_have_count(0)
    status, text = post_form(
        page, f"/ui/proposals/{proposal_id}/approve", {"csrf": csrf_of(page), "reason": "x"}
    )
    assert status == 403 and "FORBIDDEN" in text, text
    assert ui.status(proposal_id) == "PENDING"

    # An approver denies it in the UI (a reason is required).
    bob = ui.page_of("bob")
    bob.goto(f"/ui/proposals/{proposal_id}")
    bob.fill("input[aria-label='denial reason']", "not this week")
    bob.get_by_role("button", name="Deny").click()
    expect(bob.locator("#status")).to_have_text("DENIED")
    assert ui.status(proposal_id) == "DENIED"


def test_an_approver_cannot_approve_their_own_medium_change_in_the_ui_either(ui: Dashboard) -> None:
    proposal_id = ui.propose_medium("bob", "acc-sw-a1-4", "four eyes")
    page = ui.page_of("bob")
    page.goto(f"/ui/proposals/{proposal_id}")
    with page.expect_response(lambda r: r.url.endswith("/approve")) as answer:
        page.get_by_role("button", name="Approve").click()
    assert answer.value.status == 403
    expect(page.locator(".error")).to_contain_text("FOUR_EYES_VIOLATION")
    ui.shot(page, "refused")
    assert ui.status(proposal_id) == "PENDING"


def test_a_post_without_the_sessions_csrf_token_is_refused(ui: Dashboard) -> None:
    proposal_id = ui.propose_medium("olga", "acc-sw-a1-3", "never without csrf")
    page = ui.page_of("bob")
    for form in ({"reason": "no token"}, {"reason": "wrong token", "csrf": "x" * 43}):
        status, text = post_form(page, f"/ui/proposals/{proposal_id}/approve", form)
        assert status == 403 and "CSRF" in text, text
    status, _ = post_form(page, "/ui/login", {"token": ui.tokens["bob"]})
    assert status == 403, "a login without its form's token is refused too"
    assert ui.status(proposal_id) == "PENDING"


def test_controllers_show_heartbeats_and_the_audit_page_shows_the_chain_intact(ui: Dashboard) -> None:
    page = ui.page_of("vera")
    page.goto("/ui/controllers")
    table = page.locator("#controllers")
    # The GC holds itself and the regional controllers it admitted (local ones are their RC's).
    for host in ("gc-1", "rc-zone-a", "rc-zone-b"):
        expect(table).to_contain_text(ui.world.procs[host].controller_id)
    expect(page.locator(f'tr[data-controller="{GC_ID}"]')).to_contain_text("this controller")
    expect(page.locator('tr[data-controller="regional_cntl_zone-a_1"]')).to_contain_text("live")
    expect(table).to_contain_text("connected")
    ui.shot(page, "controllers")
    page.goto("/ui/audit")
    expect(page.locator("#chain-status")).to_have_text("intact")
    expect(page.locator("#events")).to_contain_text("CONFIG_EXECUTED")
    ui.shot(page, "audit", full_page=False)


def test_logging_out_ends_the_session_on_the_server(ui: Dashboard) -> None:
    page = ui.page_of("vera")
    cookies = page.context.cookies()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    stale = ui.browser.new_context(base_url=ui.world.url("gc-1"))
    stale.add_cookies(cookies)
    again = stale.new_page()
    again.goto("/ui/devices")
    expect(again).to_have_url(re.compile(r"/ui/login\?next=/ui/devices$"))
    stale.close()
