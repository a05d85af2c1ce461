"""The comparison report in a real headless browser (Debian's Chromium through Selenium).

Needs the ``chromium`` and ``chromium-driver`` Debian packages and the ``selenium`` Python
package (in the ``dev`` extra); no browser is downloaded. Without them the test is skipped,
except under CI (``CI=true``), where it fails with the packages to install. A full-page
screenshot is saved as ``test-artifacts/compare-report.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import failing_plugin
import pytest

from sparsekit.studies.compare import CompareSettings, compare

BUILTINS = ["plain", "l2", "kl", "arora", "ksparse"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WIDTH = 1280


def _missing(what: str) -> None:
    message = (
        f"{what}: the browser test needs Debian's chromium and chromium-driver packages "
        "(apt-get install -y chromium chromium-driver) and selenium (pip install -e '.[dev]')"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    binary = os.environ.get("SPARSEKIT_CHROMIUM") or shutil.which("chromium")
    driver_path = os.environ.get("SPARSEKIT_CHROMEDRIVER") or shutil.which("chromedriver")
    if not (binary and os.path.exists(binary) and driver_path and os.path.exists(driver_path)):
        _missing(
            f"chromium ({binary or 'not found'}) or chromedriver ({driver_path or 'not found'})"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything
    options = Options()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--window-size={WIDTH},1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory):
    """The five built-ins and one method that fails, 1000 images, 32 hidden units, 2 epochs."""
    comparison = compare(
        [*BUILTINS, "explode"],
        plugins=[failing_plugin],
        settings=CompareSettings(
            data=str(data_dir), subset=1000, hidden=32, epochs=2, batch_size=100
        ),
        params={"ksparse": {"k": 10}},
        out=tmp_path_factory.mktemp("browser"),
        jobs=2,
    )
    return comparison.report["html"]


def test_report_renders_in_chromium(browser, report):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(report.resolve().as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete)"
        )
    )
    images = browser.execute_script(
        "return Array.from(document.images).map(i => "
        "({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, shown: i.clientWidth}))"
    )
    # Four figures per finished method; the failed one shows what it wrote before failing.
    per_section = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.run')).map(s => "
        "s.querySelectorAll('img').length)"
    )
    assert per_section[:5] == [4] * 5 and per_section[5] < 4, per_section
    overview = browser.execute_script(
        "return Array.from(document.querySelectorAll('.overview figcaption'))"
        ".map(c => c.textContent)"
    )
    assert overview[:5] == BUILTINS  # the final filters of every method, side by side
    across = [i["alt"] for i in images[:2]]  # the plots across methods come first
    assert across == ["Loss and reconstruction error", "Seconds per epoch"], across
    assert len(images) == len(across) + sum(per_section) + len(overview)
    broken = [i for i in images if not (i["w"] > 0 and i["h"] > 0 and i["shown"] > 0)]
    assert not broken, broken
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#measures tbody tr')).map(r => "
        "Array.from(r.cells).map(c => c.textContent))"
    )
    assert [r[0] for r in rows] == [*BUILTINS, "explode"]
    assert [r[1] for r in rows] == ["finished"] * 5 + ["failed"]
    for row in rows[:5]:
        assert all(cell not in ("", "—", "nan", "inf") for cell in row[2:]), row
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.run')).map(s => "
        "[s.dataset.method, s.dataset.status, s.querySelector('.badge').textContent])"
    )
    assert sections == [[m, "finished", "finished"] for m in BUILTINS] + [
        ["explode", "failed", "failed"]
    ]
    reason = browser.execute_script(
        "const r = document.querySelector('section.failed .reason');"
        "return r && r.getBoundingClientRect().height > 0 ? r.textContent : null"
    )
    assert reason is not None and failing_plugin.EXPLODE_MESSAGE in reason
    # Reads at a laptop's width: nothing wider than the window.
    assert browser.execute_script("return document.documentElement.scrollWidth") <= WIDTH
    # Self-contained: no request the page's policy refused, no other console error.
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, min(height + 120, 16000))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "compare-report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
