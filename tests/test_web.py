"""The web page of `magray serve --http` in a real headless Chromium (Debian's chromium and
chromium-driver packages, driven by Selenium; nothing is downloaded at run time): search finds
the right memory first, an edit lands in the file, forget removes a memory, and a memory holding
HTML and script stays inert text.

MAGRAY_SCREENSHOT_DIR=docs saves screenshots of the search and statistics pages there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from magray import Memory, NotFound  # noqa: E402

from helpers import http_server  # noqa: E402
from helpers.reliability import subprocess_env  # noqa: E402

CHROMIUM = os.environ.get("MAGRAY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MAGRAY_CHROMEDRIVER", "/usr/bin/chromedriver")
# Waiting for the page to react, not a timing assertion: a page that never reacts fails the test.
WAIT_S = 30
PAYLOADS = ['<img src=x onerror="window.__pwned = 1">',
            "<script>window.__pwned = 2</script> and <b>bold</b>",
            '"><svg onload="window.__pwned = 3">']
DAY = 86400.0

# Skipped on a machine without the browser, never in CI (.ci/run installs it and sets
# MAGRAY_REQUIRE_ALL, so a missing browser fails there).
pytestmark = pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))
                                and not os.environ.get("MAGRAY_REQUIRE_ALL"),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


def seed(db: Path, model: Path) -> dict[str, int]:
    """A small memory with months of history (for the charts) and the facts the test looks for."""
    with Memory.open(db, model=str(model)) as mem:
        now = mem.now()
        ids = {
            "theme": mem.add("The user prefers dark mode in every editor and terminal", layer="insights",
                             tags=["ui", "preference"], project="home", session="chat-1").id,
            "deploy": mem.add("Deploys to production happen on Thursday afternoons", layer="assets",
                              tags=["ops"], project="work", created_at=now - 40 * DAY).id,
            "lena": mem.add("The user's daughter is called Lena and plays the cello", layer="insights",
                            tags=["family"], project="home", created_at=now - 75 * DAY).id,
            "dentist": mem.add("Dentist appointment moved to the 14th at 9:30", layer="interact",
                               session="chat-2").id,
        }
        for i, payload in enumerate(PAYLOADS):
            ids[f"payload{i}"] = mem.add(f"payload {payload}", layer="insights", tags=["hostile"],
                                         project="tests", dedup=False).id
        history = ["Coffee order: oat flat white", "The build server runs Debian 13",
                   "Alice reviews every infrastructure change", "Flight to Lisbon on May 3rd",
                   "The garden irrigation runs at 6 am", "Quarterly report due in two weeks"]
        for i, text in enumerate(history * 5):
            mem.add(f"{text} ({i})", layer=("interact", "insights", "assets")[i % 3],
                    created_at=now - (i * 11 % 120) * DAY, project=("home", "work")[i % 2])
        mem.search("warm the embedding cache", k=3)
    return ids


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver, condition):
    return WebDriverWait(driver, WAIT_S).until(condition)


def fill(driver, element_id: str, text: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def save(driver, **fields: str) -> None:
    """Type into the details form (edit_content=..., edit_tags=...), save, wait until saved."""
    for name, text in fields.items():
        fill(driver, name.replace("_", "-"), text)
    driver.find_element(By.ID, "save").click()
    message(driver, "saved")


def search(driver, text: str) -> list:
    fill(driver, "q", text)
    driver.execute_script("document.getElementById('results').replaceChildren()")
    driver.find_element(By.ID, "search-button").click()
    return wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card"))


def message(driver, contains: str) -> str:
    try:
        return wait(driver, lambda d: contains in d.find_element(By.ID, "message").text
                    and d.find_element(By.ID, "message").text)
    except TimeoutException:
        raise AssertionError(f"the page says {driver.find_element(By.ID, 'message').text!r}, not {contains!r}") from None


def test_the_page_searches_edits_forgets_and_keeps_payloads_inert(db_path, model_path, tmp_path, browser):
    ids = seed(db_path, model_path)
    server = http_server.start(db_path, subprocess_env(tmp_path))
    shots = os.environ.get("MAGRAY_SCREENSHOT_DIR")
    try:
        browser.get(server.url)
        wait(browser, lambda d: d.find_element(By.ID, "app").is_displayed())

        # Search: the right memory first, with its score parts.
        cards = search(browser, "what theme does the user like in the editor?")
        assert cards[0].get_attribute("data-id") == str(ids["theme"])
        assert "similarity" in cards[0].find_element(By.CSS_SELECTOR, ".parts").text
        assert "hybrid search" in browser.find_element(By.ID, "applied").text
        if shots:
            cards[0].click()
            wait(browser, lambda d: d.find_element(By.ID, "details").is_displayed())
            browser.save_screenshot(str(Path(shots) / "web-search.png"))

        # Edit: the change is in the file.
        search(browser, "when do deploys happen?")[0].click()
        wait(browser, lambda d: d.find_element(By.ID, "details-title").text == f"Memory #{ids['deploy']}")
        save(browser, edit_content="Deploys to production happen on Tuesday mornings", edit_tags="ops, schedule")
        with Memory.open(db_path, create=False) as mem:
            edited = mem.get(ids["deploy"], touch=False)
        assert edited.content == "Deploys to production happen on Tuesday mornings"
        assert edited.tags == ["ops", "schedule"]
        assert search(browser, "which day are deploys?")[0].get_attribute("data-id") == str(ids["deploy"])

        # Forget: gone from the file and from the results.
        search(browser, "dentist appointment")[0].click()
        wait(browser, lambda d: d.find_element(By.ID, "details-title").text == f"Memory #{ids['dentist']}")
        browser.find_element(By.ID, "forget").click()
        wait(browser, expected_conditions.alert_is_present()).accept()
        message(browser, "forgotten")
        with Memory.open(db_path, create=False) as mem, pytest.raises(NotFound):
            mem.get(ids["dentist"], touch=False)
        # With "all", weak matches are listed too (without it nothing may pass the relevance floor).
        browser.find_element(By.ID, "search-all").click()
        assert str(ids["dentist"]) not in [c.get_attribute("data-id") for c in search(browser, "dentist appointment")]
        browser.find_element(By.ID, "search-all").click()
        # A question about nothing stored: no card, and the page says so.
        fill(browser, "q", "Which yoga studio did I sign up with?")
        browser.find_element(By.ID, "search-button").click()
        wait(browser, lambda d: "no memory matches" in d.find_element(By.ID, "applied").text)
        assert browser.find_elements(By.CSS_SELECTOR, "#results .card") == []

        # HTML and script in a memory are shown as the characters they are, and never run.
        cards = search(browser, "payload")
        shown = {c.get_attribute("data-id"): c.find_element(By.CSS_SELECTOR, ".content").text for c in cards}
        for i, payload in enumerate(PAYLOADS):
            assert shown[str(ids[f"payload{i}"])] == f"payload {payload}"
        cards[0].click()
        wait(browser, lambda d: d.find_element(By.ID, "details").is_displayed())
        assert browser.find_element(By.ID, "edit-content").get_attribute("value").startswith("payload ")
        assert not browser.find_elements(By.CSS_SELECTOR, "#results img, #results script, #results svg, "
                                                          "#results b, #details img, #details svg")
        assert browser.execute_script("return window.__pwned === undefined")
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text

        # Browse with paging, statistics and status render.
        browser.find_element(By.ID, "nav-browse").click()
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#memories .card")) == 25)
        first_page = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, "#memories .card")]
        browser.find_element(By.ID, "next").click()
        wait(browser, lambda d: d.find_element(By.ID, "page-info").text.startswith("26"))
        second_page = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, "#memories .card")]
        assert second_page and not set(first_page) & set(second_page)
        browser.find_element(By.ID, "nav-stats").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-months svg rect"))
        assert "hit rate" in browser.find_element(By.ID, "tiles").text
        if shots:
            browser.save_screenshot(str(Path(shots) / "web-stats.png"))
        browser.find_element(By.ID, "nav-status").click()
        wait(browser, lambda d: "minilm" in d.find_element(By.ID, "status-model").text.lower())
    finally:
        code, log = server.stop()
    assert code == 0, log


def test_the_page_asks_for_the_token_of_a_non_loopback_server(db_path, model_path, tmp_path, browser):
    token = "page-token-0123456789abcdef"
    with Memory.open(db_path, model=str(model_path)) as mem:
        memory_id = mem.add("The spare key is under the blue flower pot", layer="assets").id
    server = http_server.start(db_path, subprocess_env(tmp_path, MAGRAY_TOKEN=token), "0.0.0.0:0")
    try:
        # A link with a wrong token in its fragment is refused, and the page asks for the token.
        browser.get(f"http://127.0.0.1:{server.port}/#token=not-the-token-at-all")
        message(browser, "wrong token")
        wait(browser, lambda d: d.find_element(By.ID, "login").is_displayed())
        assert not browser.find_element(By.ID, "app").is_displayed()
        fill(browser, "token", token)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait(browser, lambda d: d.find_element(By.ID, "app").is_displayed())
        assert search(browser, "where is the spare key?")[0].get_attribute("data-id") == str(memory_id)
        assert token not in browser.current_url
        assert "magray_auth" not in browser.execute_script("return document.cookie")  # HttpOnly

        # The server restarts (a new CSRF token): the open page still saves, with its cookie.
        code, log = server.stop()
        assert code == 0, log
        server = http_server.start(db_path, subprocess_env(tmp_path, MAGRAY_TOKEN=token), f"0.0.0.0:{server.port}")
        browser.find_element(By.CSS_SELECTOR, "#results .card").click()
        wait(browser, lambda d: d.find_element(By.ID, "details-title").text == f"Memory #{memory_id}")
        save(browser, edit_tags="home")
        with Memory.open(db_path, create=False) as mem:
            assert mem.get(memory_id, touch=False).tags == ["home"]
    finally:
        code, log = server.stop()
    assert code == 0, log
