"""End to end: the built gift-list demo in headless Chromium against a real server.

Each "user" is a browser context of its own (its own localStorage, its own WebSocket), on the
page the server serves at ``/``. Every wait is a Playwright ``expect`` with a timeout. Needs
``client_demo/dist`` (``npm run build`` in client_demo) and Chromium at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from .conftest import ROOT, ServerFactory, ServerProcess

pytestmark = pytest.mark.browser

DIST = ROOT / "client_demo" / "dist"
INITIAL_STATE = ROOT / "client_demo" / "initial-state.json"
# the README's screenshots are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test run
# leaves the work tree clean; otherwise they are still taken (the page must render), elsewhere
SCREENSHOTS = (ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "immer-demo-screenshots")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
RECONNECT_TIMEOUT_MS = 30_000  # the client's reconnect backoff grows up to 10 s
expect.set_options(timeout=TIMEOUT_MS)

CIRCLE = "The Complete Circle Series"  # free in the initial list
OpenDemo = Callable[..., Page]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} is missing: run `npm ci && npm run build` in client_demo first")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_demo(browser: Browser) -> Iterator[OpenDemo]:
    """``open_demo(server, user)``: a fresh browser context on the demo, synced, as ``user``."""
    contexts: list[BrowserContext] = []

    def open_page(server: ServerProcess, user: int, width: int = 820, height: int = 760) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        _offline_except(context, server)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        expect(page.get_by_test_id("status")).to_have_text("synced")
        page.get_by_test_id("user-select").select_option(str(user))
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def demo_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory("--initial-state", str(INITIAL_STATE), "--demo-dir", str(DIST))


def _offline_except(context: BrowserContext, server: ServerProcess) -> None:
    """Only the server is reachable: the lesson's remote gift images fail fast (placeholders)."""

    def route(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)


def server_state(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.url}/state", timeout=5)
    response.raise_for_status()
    return int(response.headers["etag"].removeprefix("W/").strip('"')), response.json()


def shown_gifts(page: Page) -> list[tuple[str, str]]:
    """(description, reservedBy or "") of each gift as the page shows it."""
    items = page.get_by_test_id("gift")
    return [
        (item.locator("h2").inner_text(), item.get_attribute("data-reserved-by") or "")
        for item in items.all()
    ]


def expected_gifts(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(gift["description"], str(gift.get("reservedBy", ""))) for gift in state["gifts"]]


def gift(page: Page, description: str) -> Any:
    return page.get_by_test_id("gift").filter(has_text=description)


def add_gift(page: Page, description: str) -> None:
    page.get_by_test_id("gift-description").fill(description)
    page.get_by_test_id("add-gift").click()
    expect(gift(page, description)).to_have_count(1)  # shown at once, before any ack


def assert_converged(server: ServerProcess, *pages: Page) -> dict[str, Any]:
    """Waits until every page is synced at the server's version and shows the server's list."""
    for page in pages:
        expect(page.get_by_test_id("status")).to_have_text("synced")
    version, state = server_state(server)  # final: nothing is pending on any page
    for page in pages:
        expect(page.get_by_test_id("version")).to_have_text(str(version))
        assert shown_gifts(page) == expected_gifts(state)
    return state


def test_two_pages_converge(
    demo_server: ServerProcess, open_demo: OpenDemo, browser: Browser
) -> None:
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)

    add_gift(alice, "Kite")
    add_gift(bob, "Board game")
    gift(alice, CIRCLE).get_by_test_id("toggle-reservation").click()
    gift(bob, "Kite").get_by_test_id("toggle-reservation").click()

    state = assert_converged(demo_server, alice, bob)
    reserved = {item["description"]: item.get("reservedBy") for item in state["gifts"]}
    assert reserved[CIRCLE] == 1
    assert reserved["Kite"] == 2
    assert reserved["Board game"] is None
    expect(gift(bob, CIRCLE).get_by_test_id("toggle-reservation")).to_be_disabled()

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=SCREENSHOTS / "demo.png")
    _screenshot_side_by_side(browser, demo_server, SCREENSHOTS / "demo-two-windows.png")


def _screenshot_side_by_side(browser: Browser, server: ServerProcess, path: Path) -> None:
    """Two independent copies of the demo (iframes) next to each other, as two users."""
    context = browser.new_context(viewport={"width": 1500, "height": 720})
    try:
        _offline_except(context, server)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        frame = f'<iframe src="{server.url}/"></iframe>'
        page.set_content(
            "<style>body{margin:0;display:flex;gap:6px;background:#c9c4d8}"
            "iframe{flex:1;height:100vh;border:0}</style>" + frame * 2
        )
        for index, user in enumerate(("1", "2")):
            window = page.frame_locator("iframe").nth(index)
            expect(window.get_by_test_id("status")).to_have_text("synced")
            window.get_by_test_id("user-select").select_option(user)
        page.screenshot(path=path)
    finally:
        context.close()


def test_late_page_starts_from_snapshot(demo_server: ServerProcess, open_demo: OpenDemo) -> None:
    first = open_demo(demo_server, user=3)
    add_gift(first, "Scarf")
    gift(first, "Scarf").get_by_test_id("toggle-reservation").click()
    gift(first, CIRCLE).get_by_test_id("toggle-reservation").click()
    assert_converged(demo_server, first)

    late = open_demo(demo_server, user=4)
    state = assert_converged(demo_server, first, late)
    assert shown_gifts(late) == shown_gifts(first)
    assert ("Scarf", "3") in expected_gifts(state)


def test_server_restart_keeps_pending_edits_exactly_once(
    server_factory: ServerFactory, open_demo: OpenDemo, tmp_path: Path
) -> None:
    server = server_factory(
        "--initial-state",
        str(INITIAL_STATE),
        "--demo-dir",
        str(DIST),
        store=f"sqlite:///{tmp_path}/d.db",
    )
    alice = open_demo(server, user=1)
    bob = open_demo(server, user=2)
    assert server.proc is not None

    # The server crashes with a change in flight: sent by Alice, never answered.
    server.proc.send_signal(signal.SIGSTOP)
    add_gift(alice, "In flight")
    server.kill()
    for page in (alice, bob):
        expect(page.get_by_test_id("status")).to_have_text("offline")
    # Edits made while it is down.
    add_gift(alice, "Offline kite")
    gift(alice, CIRCLE).get_by_test_id("toggle-reservation").click()
    add_gift(bob, "Offline book")

    server.start()
    for page in (alice, bob):
        expect(page.get_by_test_id("status")).to_have_text("synced", timeout=RECONNECT_TIMEOUT_MS)
    state = assert_converged(server, alice, bob)
    descriptions = [item["description"] for item in state["gifts"]]
    for added in ("In flight", "Offline kite", "Offline book"):
        assert descriptions.count(added) == 1, descriptions
    assert (CIRCLE, "1") in expected_gifts(state)


def test_simultaneous_edits_of_one_gift(demo_server: ServerProcess, open_demo: OpenDemo) -> None:
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    assert demo_server.proc is not None

    # Freeze the server so that both edits are made against the same version and reach it
    # together: one of each pair is committed first and the other is rebased or retried.
    demo_server.proc.send_signal(signal.SIGSTOP)
    try:
        for page in (alice, bob):
            gift(page, CIRCLE).get_by_test_id("toggle-reservation").click()
        add_gift(alice, "Alice's gift")
        add_gift(bob, "Bob's gift")
    finally:
        demo_server.proc.send_signal(signal.SIGCONT)

    state = assert_converged(demo_server, alice, bob)
    descriptions = [item["description"] for item in state["gifts"]]
    assert descriptions.count("Alice's gift") == descriptions.count("Bob's gift") == 1
    circle = next(item for item in state["gifts"] if item["description"] == CIRCLE)
    assert circle.get("reservedBy") in (1, 2)


def test_server_that_lost_its_data(demo_server: ServerProcess, open_demo: OpenDemo) -> None:
    """A memory store restarts empty under a new epoch: pages take its snapshot and re-apply
    the edits they made while it was down on top of it."""
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    add_gift(alice, "Forgotten")
    assert_converged(demo_server, alice, bob)

    demo_server.stop()
    expect(bob.get_by_test_id("status")).to_have_text("offline")
    add_gift(bob, "Made offline")
    demo_server.start()

    for page in (alice, bob):
        expect(page.get_by_test_id("status")).to_have_text("synced", timeout=RECONNECT_TIMEOUT_MS)
    state = assert_converged(demo_server, alice, bob)
    descriptions = [item["description"] for item in state["gifts"]]
    assert "Forgotten" not in descriptions
    assert descriptions.count("Made offline") == 1


def test_remove_from_the_middle_while_a_later_gift_is_reserved(
    demo_server: ServerProcess, open_demo: OpenDemo
) -> None:
    """A splice in the middle of the list races an edit of a gift after it: whichever the server
    commits first, the other is rebased (or re-run by id after a conflict), never lost."""
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    middle = "Egghead.io subscription"
    assert [name for name, _ in shown_gifts(alice)] == ["Immer license", middle, CIRCLE]
    assert demo_server.proc is not None

    demo_server.proc.send_signal(signal.SIGSTOP)  # both edits are made against the same version
    try:
        gift(alice, middle).get_by_test_id("remove-gift").click()
        expect(gift(alice, middle)).to_have_count(0)
        gift(bob, CIRCLE).get_by_test_id("toggle-reservation").click()
        expect(gift(bob, CIRCLE)).to_have_attribute("data-reserved-by", "2")
    finally:
        demo_server.proc.send_signal(signal.SIGCONT)

    state = assert_converged(demo_server, alice, bob)
    assert expected_gifts(state) == [("Immer license", "5"), (CIRCLE, "2")]
    for page in (alice, bob):
        expect(page.get_by_role("alert")).to_have_count(0)  # nothing was dropped


# Undo and redo (issue #11): each page undoes its own changes only, and never a collaborator's.
MIDDLE = "Egghead.io subscription"  # reserved by user 21 in the initial list


def undo_button(page: Page) -> Any:
    return page.get_by_test_id("undo")


def test_undo_removes_my_gift_and_keeps_anothers_reservation(
    demo_server: ServerProcess, open_demo: OpenDemo
) -> None:
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    expect(undo_button(alice)).to_be_disabled()
    expect(alice.get_by_test_id("redo")).to_be_disabled()

    add_gift(alice, "Kite")
    expect(gift(bob, "Kite")).to_have_count(1)
    gift(bob, CIRCLE).get_by_test_id("toggle-reservation").click()
    expect(gift(alice, CIRCLE)).to_have_attribute("data-reserved-by", "2")

    undo_button(alice).click()
    for page in (alice, bob):
        expect(gift(page, "Kite")).to_have_count(0)
    state = assert_converged(demo_server, alice, bob)
    assert expected_gifts(state) == [("Immer license", "5"), (MIDDLE, "21"), (CIRCLE, "2")]
    expect(undo_button(alice)).to_be_disabled()
    expect(alice.get_by_test_id("redo")).to_be_enabled()

    alice.get_by_test_id("redo").click()  # and back
    expect(gift(bob, "Kite")).to_have_count(1)
    assert_converged(demo_server, alice, bob)


def test_undo_is_skipped_when_someone_changed_the_value_since(
    demo_server: ServerProcess, open_demo: OpenDemo
) -> None:
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    gift(alice, CIRCLE).get_by_test_id("toggle-reservation").click()
    expect(gift(bob, CIRCLE)).to_have_attribute("data-reserved-by", "1")

    # Bob changes the reservation (freeing it on Alice's behalf, then taking it himself).
    bob.get_by_test_id("user-select").select_option("1")
    gift(bob, CIRCLE).get_by_test_id("toggle-reservation").click()
    bob.get_by_test_id("user-select").select_option("2")
    gift(bob, CIRCLE).get_by_test_id("toggle-reservation").click()
    expect(gift(alice, CIRCLE)).to_have_attribute("data-reserved-by", "2")

    undo_button(alice).click()
    expect(alice.get_by_role("alert")).to_contain_text("undo_skipped")
    expect(undo_button(alice)).to_be_disabled()
    state = assert_converged(demo_server, alice, bob)
    assert (CIRCLE, "2") in expected_gifts(state)


def test_undo_puts_a_removed_gift_back_in_place_keeping_a_later_edit(
    demo_server: ServerProcess, open_demo: OpenDemo
) -> None:
    alice = open_demo(demo_server, user=1)
    bob = open_demo(demo_server, user=2)
    assert demo_server.proc is not None

    demo_server.proc.send_signal(signal.SIGSTOP)  # the removal and the edit race
    try:
        gift(alice, MIDDLE).get_by_test_id("remove-gift").click()
        gift(bob, CIRCLE).get_by_test_id("toggle-reservation").click()
    finally:
        demo_server.proc.send_signal(signal.SIGCONT)
    state = assert_converged(demo_server, alice, bob)
    assert expected_gifts(state) == [("Immer license", "5"), (CIRCLE, "2")]

    alice.keyboard.press("Control+z")
    expect(gift(bob, MIDDLE)).to_have_count(1)
    state = assert_converged(demo_server, alice, bob)
    assert expected_gifts(state) == [("Immer license", "5"), (MIDDLE, "21"), (CIRCLE, "2")]

    alice.keyboard.press("Control+Shift+z")  # redo removes it again
    expect(gift(bob, MIDDLE)).to_have_count(0)
    state = assert_converged(demo_server, alice, bob)
    assert expected_gifts(state) == [("Immer license", "5"), (CIRCLE, "2")]


def test_a_gift_reserved_by_null_shows_as_available(
    demo_server: ServerProcess, open_demo: OpenDemo
) -> None:
    page = open_demo(demo_server, user=1)
    added = {"id": "http", "description": "Added over HTTP", "image": "", "reservedBy": None}
    response = httpx.patch(
        f"{demo_server.url}/state",
        json=[{"op": "add", "path": "/gifts/-", "value": added}],
        headers={"content-type": "application/json-patch+json"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    item = gift(page, "Added over HTTP")
    expect(item).to_contain_text("Still available")
    expect(item.get_by_test_id("toggle-reservation")).to_have_text("Reserve")
    item.get_by_test_id("toggle-reservation").click()
    expect(item).to_have_attribute("data-reserved-by", "1")
    assert (added["description"], "1") in expected_gifts(assert_converged(demo_server, page))


def test_chromium_negotiates_shared_deflate(demo_server: ServerProcess,
                                            open_demo: OpenDemo) -> None:
    """Chromium offers permessage-deflate and the server takes it (one compressed frame shared
    by all): a socket opened by the page reports it, and its snapshot arrives whole."""
    page = open_demo(demo_server, 1)
    extensions, snapshot = page.evaluate("""() => new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws`);
        ws.onerror = reject;
        ws.onmessage = (event) => {
            const data = JSON.parse(event.data);
            resolve([ws.extensions, Array.isArray(data) ? data[0] : data]);
            ws.close();
        };
    })""")
    assert "permessage-deflate" in extensions and "server_no_context_takeover" in extensions
    version, state = server_state(demo_server)
    assert snapshot["type"] == "snapshot" and snapshot["version"] == version
    assert snapshot["state"] == state
