"""Browser fixtures: Chromium driven by Playwright.

The browser is HUMANLM_CHROMIUM (`make test` sets it: /usr/bin/chromium when present, else the
Chromium that `playwright install chromium` downloads), else /usr/bin/chromium, else Playwright's
own Chromium if it was downloaded before. These fixtures never download anything.
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

SYSTEM_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)


def _chromium(playwright_chromium: str) -> str:
    chosen = os.environ.get("HUMANLM_CHROMIUM")
    if chosen:
        if not os.access(chosen, os.X_OK):
            pytest.fail(f"HUMANLM_CHROMIUM={chosen} is not an executable browser")
        return chosen
    for candidate in (SYSTEM_CHROMIUM, playwright_chromium):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("No Chromium for the browser tests: run `make test` (it finds or downloads one), "
                "or sudo apt-get install -y chromium, or set HUMANLM_CHROMIUM=/path/to/chromium")


@pytest.fixture(autouse=True)
def _patient_expect():
    """Several browsers and the server share 2 cores here: every check may take 10 s instead of
    Playwright's 5 (set back afterwards)."""
    expect.set_options(timeout=10_000)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(p.chromium.executable_path),
                              args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _watch_security_policy(pg) -> list[str]:
    """Every Content-Security-Policy violation a page reports (the browser refuses the inline
    script or style, so the page is broken for real users): checked when the test ends."""
    violations: list[str] = []
    pg.on("console", lambda msg: violations.append(msg.text)
          if msg.type == "error" and "Content Security Policy" in msg.text else None)
    return violations


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=DESKTOP)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    violations = _watch_security_policy(pg)
    try:
        yield pg
    finally:
        context.close()
    assert violations == [], violations


@pytest.fixture
def phone_page(browser):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    violations = _watch_security_policy(pg)
    try:
        yield pg
    finally:
        context.close()
    assert violations == [], violations


@pytest.fixture
def people(browser):
    """Separate people: each call opens a page in its own browser context (a phone, or a desktop
    at `viewport`). At the end, fail the test on any JavaScript error or Content-Security-Policy
    violation in any of them."""
    contexts, errors = [], []

    def open_page(phone: bool = False, viewport: dict | None = None):
        if phone:
            ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        else:
            ctx = browser.new_context(viewport=viewport or DESKTOP)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda msg: errors.append(msg.text)
              if msg.type == "error" and "Content Security Policy" in msg.text else None)
        return pg

    yield open_page
    for ctx in contexts:
        ctx.close()
    assert errors == [], errors
