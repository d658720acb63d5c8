"""Presence end to end: the demo in headless Chromium shows who is online and what they point at.

Uses the fixtures of ``test_demo_browser`` (a browser per module, a context per user).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from . import test_demo_browser as demo
from .conftest import ServerProcess
from .test_demo_browser import CIRCLE, SCREENSHOTS, OpenDemo, gift

pytestmark = pytest.mark.browser

# the demo tests' fixtures
browser = demo.browser
demo_server = demo.demo_server
open_demo = demo.open_demo


def test_two_pages_see_each_other_and_a_closed_one_goes(
    demo_server: ServerProcess, open_demo: OpenDemo,
) -> None:
    alice = open_demo(demo_server, user=3)
    bob = open_demo(demo_server, user=7)
    expect(alice.get_by_test_id("peer")).to_have_count(1)
    expect(alice.get_by_test_id("peer")).to_have_attribute("data-user", "7")
    expect(bob.get_by_test_id("peer")).to_have_attribute("data-user", "3")
    # a user picked in one page is shown in the other
    bob.get_by_test_id("user-select").select_option("9")
    expect(alice.get_by_test_id("peer")).to_have_attribute("data-user", "9")
    started = time.monotonic()
    bob.context.close()
    expect(alice.get_by_test_id("peer")).to_have_count(0, timeout=2000)
    assert time.monotonic() - started < 2.0


def test_hovering_a_gift_highlights_it_for_the_others(
    demo_server: ServerProcess, open_demo: OpenDemo,
) -> None:
    alice = open_demo(demo_server, user=3)
    bob = open_demo(demo_server, user=7)
    expect(alice.get_by_test_id("peer")).to_have_count(1)
    gift(bob, CIRCLE).hover()
    target = gift(alice, CIRCLE)
    expect(target).to_have_attribute("data-pointed-by", "7")
    expect(target).to_have_class("gift pointed")
    expect(alice.locator(".gift.pointed")).to_have_count(1)  # only that gift
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=SCREENSHOTS / "demo-presence.png")
    # keyboard focus points too; moving away clears the highlight
    bob.mouse.move(1, 1)
    expect(target).to_have_attribute("data-pointed-by", "")
    gift(bob, CIRCLE).get_by_test_id("toggle-reservation").focus()
    expect(target).to_have_attribute("data-pointed-by", "7")
