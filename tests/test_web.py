"""The web page in a real browser (issue 14): Playwright drives the system's headless Chromium
(/usr/bin/chromium; .ci/run installs it from the OS packages, Playwright's own download is not reachable)
against `python -m engine serve` on a free port, stopped at the end. Entering a session and seeing the
right units, comparing two payers, opening an explanation, uploading a small batch, a rule-file error
shown with its line, the keyboard and a phone-sized screen. Each test keeps a screenshot in its tmp_path.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_service import free_port, serve, stop, wait_ready

CHROMIUM = "/usr/bin/chromium"
# Skipped on a developer's machine without chromium; in CI (.ci/run sets PAYRULES_BROWSER_TESTS=required)
# a missing browser fails these tests instead, so the page is never left untested there.
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("PAYRULES_BROWSER_TESTS") != "required",
                                reason=f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def base_url():
    port = free_port()
    proc = serve("--port", str(port))
    try:
        wait_ready(proc, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, base_url, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    opened.goto(base_url + "/")
    yield opened
    context.close()


def enter_session(page) -> None:
    """A PT session: 97110 for 38 min and 97140 for 10 min (a third row added, then removed)."""
    page.get_by_label("Date of service").fill("2026-03-02")
    page.get_by_label("Discipline").select_option("PT")
    rows = page.locator("#services tbody tr")
    rows.nth(0).get_by_label("Code").fill("97110")
    rows.nth(0).get_by_label("Minutes").fill("38")
    rows.nth(0).get_by_label("Provider").select_option("PT")
    page.get_by_role("button", name="Add a service").click()
    rows.nth(1).get_by_label("Code").fill("97140")
    rows.nth(1).get_by_label("Minutes").fill("10")
    page.get_by_role("button", name="Add a service").click()
    rows.nth(2).get_by_label("Code").fill("97530")
    rows.nth(2).get_by_role("button", name="Remove this service").click()
    assert rows.count() == 2


def units(page, payer: str) -> dict:
    card = page.locator(f'section[aria-label="payer {payer}"]')
    codes = card.locator('td[data-col="code"]').all_inner_texts()
    return dict(zip(codes, map(int, card.locator('td[data-col="units"]').all_inner_texts())))


def test_enter_a_session_and_see_the_right_units(page, tmp_path):
    enter_session(page)
    page.get_by_role("button", name="Bill and compare").click()
    page.locator('section[aria-label="payer medicare"]').wait_for()
    # Medicare's 8-minute rule pools the day's timed minutes: 38 + 10 = 48 min is in the band 38-52, so
    # 3 units. Full 15-minute units first: 97110 2 (8 min left), 97140 0 (10 min left); the 3rd unit goes
    # to the largest leftover, 97140's 10 min. So 97110 x2, 97140 x1, with GP for a PT plan of care.
    assert units(page, "medicare") == {"97110": 2, "97140": 1}
    assert "GP" in page.locator('section[aria-label="payer medicare"] td[data-col="modifiers"]').first.inner_text()
    page.screenshot(path=tmp_path / "session.png", full_page=True)


def test_compare_two_payers_with_differences_highlighted(page, tmp_path):
    enter_session(page)
    page.get_by_label("example-midpoint").check()
    page.get_by_role("button", name="Bill and compare").click()
    page.locator('section[aria-label="payer example-midpoint"]').wait_for()
    # example-midpoint rounds each code on its own: a unit per full 15 min, one more from 8 min left over.
    # 97110 38 min = 2 full + 8 left -> 3; 97140 10 min = 0 full + 10 left -> 1. Medicare (above): 2 and 1.
    assert units(page, "example-midpoint") == {"97110": 3, "97140": 1}
    assert units(page, "medicare") == {"97110": 2, "97140": 1}
    differs = page.locator("table.compare tr.differs th")
    assert differs.all_inner_texts() == ["97110"]
    highlighted = page.locator('table.compare td.diff[data-payer="example-midpoint"]')
    # 97110's units (with its modifier set) and the total (4 against 3)
    assert [text.split()[0] for text in highlighted.all_inner_texts()] == ["3", "4"]
    page.screenshot(path=tmp_path / "compare.png", full_page=True)


def test_open_an_explanation(page, tmp_path):
    enter_session(page)
    page.get_by_role("button", name="Bill and compare").click()
    page.get_by_role("button", name="Explain medicare").click()
    text = page.locator("pre.explain-text")
    text.wait_for()
    assert "Total timed minutes: 97110 38 + 97140 10 = 48 min" in text.inner_text()
    assert "48 min is in the band 38-52, which gives 3 units" in text.inner_text()
    locations = page.locator('#explanation td[data-col="location"]').all_inner_texts()
    assert locations and all(loc.startswith("rules/medicare.yaml:") for loc in locations)
    assert page.evaluate("document.activeElement.tagName") == "H3"      # focus moved to the explanation
    page.screenshot(path=tmp_path / "explain.png", full_page=True)


def test_upload_a_small_batch_and_download_the_results(page, tmp_path):
    batch = tmp_path / "day.csv"
    batch.write_text("session_id,payer,date_of_service,discipline,code,minutes,group_size,provider\n"
                     "A,medicare,2026-03-02,PT,97110,23,,\n"          # 23 min: 2 units
                     "B,medicare,2026-03-02,OT,97535,7,,\n"           # 7 min alone: under 8, no unit
                     "C,medicare,2026-03-02,PT,97110,-5,,\n"         # negative minutes: an error record
                     'D,medicare,2026-03-02,PT,97110,"x,\n')          # a quote left open: failed to parse
    page.get_by_label("CSV or JSONL file of sessions").set_input_files(str(batch))
    page.get_by_role("button", name="Bill the batch").click()
    summary = page.locator("#batch-result .summary")
    summary.wait_for()
    # as `payrules bill day.csv` counts them: A and B billed (B with no line), C with errors, D unreadable
    assert summary.inner_text() == "day.csv: 4 sessions: 2 billed, 1 with errors, 1 failed to parse"
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the results (day.results.jsonl)").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 4 and '"session_id":"A"' in lines[0] and '"total_units":2' in lines[0]
    assert '"error":"day.csv:4: services[0].minutes: must be at least 0"' in lines[2]
    assert '"error":"day.csv:5: malformed CSV' in lines[3]
    page.screenshot(path=tmp_path / "batch.png", full_page=True)


def test_a_rule_file_error_is_shown_with_its_line(page, tmp_path):
    page.get_by_label("Payer YAML").fill("payer: my-plan\nname: My plan\nextends: medicare\nmethod:\n"
                                         "  name: per_code_midpoint\n")
    page.get_by_role("button", name="Validate").click()
    errors = page.locator("#validate-result ul.errors li")
    errors.first.wait_for()
    # line 5 holds the method name, which is no unit method (midpoint_per_code is)
    assert any(text.startswith("pasted.yaml:5: ") for text in errors.all_inner_texts()), errors.all_inner_texts()
    page.screenshot(path=tmp_path / "validate.png", full_page=True)


def test_keyboard_only_and_a_phone_screen(browser, base_url, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(base_url + "/")
        page.get_by_label("Code").first.focus()
        page.keyboard.type("97110")
        page.keyboard.press("Tab")
        page.keyboard.type("23")
        page.get_by_role("button", name="Add a service").focus()
        page.keyboard.press("Enter")        # adds a row and puts the cursor in its code
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Code"
        page.keyboard.type("97140")
        page.keyboard.press("Tab")
        page.keyboard.type("8")
        page.get_by_role("button", name="Bill and compare").focus()
        page.keyboard.press("Enter")
        page.locator('section[aria-label="payer medicare"]').wait_for()
        # 23 + 8 = 31 min: in the band 23-37, 2 units in all (which code gets the 2nd is Medicare's
        # tie-break of the equal 8-minute leftovers: not what this test is about)
        total = page.locator('table.compare td[data-total="1"]').inner_text()
        assert total == "2"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=tmp_path / "phone.png", full_page=True)
    finally:
        context.close()
