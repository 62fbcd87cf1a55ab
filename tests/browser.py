"""Open an HTML file in headless Chromium (Debian's `chromium` + `chromium-driver`, no browser
download) and report what a reader would see: every image and whether it loaded, every
section and how much text it holds."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
INSPECT = """
const images = Array.from(document.images).map(img => ({
  alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
  src: img.src.slice(0, 40)}));
const sections = Array.from(document.querySelectorAll('section')).map(s => {
  const heading = (s.querySelector('h2') || {}).innerText || '';
  return {id: s.id, heading, body: s.innerText.replace(heading, '').trim().length};
});
const external = Array.from(document.querySelectorAll('[src],link[href]'))
  .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:'));
return {title: document.title, images, sections, external};
"""


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def inspect_page(path: Path) -> dict:
    """Load ``path`` (file://) and return {"title", "images", "sections", "external"}."""
    if not chromium_available():
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fairtrain-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(Path(path).resolve().as_uri())
        return driver.execute_script(INSPECT)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
