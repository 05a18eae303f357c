"""The web playground at ``/``, in Debian's Chromium driven by Playwright, against a real
``bentoml serve`` and a real worker. Browsers cannot be downloaded here: Playwright is pointed at
``/usr/bin/chromium`` (``make tools`` installs it)."""

import base64
import re
import shutil
import time

import numpy as np
import pytest

from ganforge.spec import TrainConfig
from tests.services.test_service import decode, read_digits
from tests.utils.server import TOKEN
from tests.utils.workers import Worker, steps_lasting

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No background connections: this machine's network is closed, and Chromium would log each
# refused one.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is missing: make tools installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the playground; ``page.errors`` collects what JavaScript complained of."""
    context = browser.new_context(viewport={"width": 1100, "height": 1500})
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(f"console: {m.text}"))
    pg.on("pageerror", lambda e: pg.errors.append(f"uncaught: {e}"))
    pg.goto(f"{server.url}/")
    yield pg
    context.close()


def png_of(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return decode(base64.b64decode(src.split(",", 1)[1]))


def test_page_is_served_with_its_assets(server) -> None:
    with server.client() as c:
        page = c.get("/")
        js = c.get("/playground/playground.js")
        css = c.get("/playground/playground.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/playground/playground.js">' in page.text
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert css.status_code == 200 and "image-rendering: pixelated" in css.text


def click_digit(page, digit: int, seed: int, count: int) -> list[np.ndarray]:
    """Click a digit button; returns the pixels of the images the page shows."""
    from playwright.sync_api import expect

    page.fill("#seed", str(seed))
    page.fill("#count", str(count))
    page.click(f"[data-digit='{digit}']")
    images = page.locator("#gallery img")
    expect(images).to_have_count(count)
    expect(page.locator("#draw-status")).to_contain_text(f"Digit {digit} from ")
    expect(page.locator("#draw-status")).to_contain_text(f"seed {seed}")
    return [png_of(images.nth(i).get_attribute("src")) for i in range(count)]


def walk(page, seed_a: int, seed_b: int, steps: int) -> None:
    from playwright.sync_api import expect

    page.fill("#seed-a", str(seed_a))
    page.fill("#seed-b", str(seed_b))
    page.fill("#walk-steps", str(steps))
    page.click("#walk-form button[type=submit]")
    expect(page.locator("#walk-status")).to_contain_text(f"{steps} steps from seed {seed_a}")


def test_clicking_7_draws_sevens_and_the_strip_appears(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#model-info")).to_contain_text("label accuracy")
    pixels = click_digit(page, 7, seed=5, count=8)
    assert all(p.shape == (28, 28) for p in pixels)
    assert (read_digits(pixels) == 7).sum() >= 7, read_digits(pixels)
    first = page.locator("#gallery img").first
    box = first.bounding_box()  # shown large, with square pixels
    assert box["width"] >= 112 and box["height"] >= 112
    assert first.evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
    other = click_digit(page, 7, seed=6, count=8)
    assert not np.array_equal(other[0], pixels[0])
    again = click_digit(page, 7, seed=5, count=8)  # the same seed draws the same digits
    assert all(np.array_equal(a, b) for a, b in zip(again, pixels, strict=True))

    walk(page, 1, 2, 8)
    strip = page.locator("#strip")
    expect(strip).to_be_visible()
    assert strip.evaluate("e => e.naturalWidth") == 8 * 30 + 2
    page.locator("#frame-slider").fill("7")
    expect(page.locator("#frame-label")).to_have_text("8")
    lit = page.locator("#frame").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 == 0 "
        "&& v > 128).length")
    assert 20 < lit < 500  # the last frame: a drawn digit, not an empty canvas
    assert page.errors == []


def submit(page, family: str, loss: str, steps: int | None):
    """Submit a job with the page's form (``steps`` None: the field left empty); returns the
    locator of its row."""
    from playwright.sync_api import expect

    page.select_option("#job-family", family)
    page.select_option("#job-loss", loss)
    page.fill("#job-steps", "" if steps is None else str(steps))
    page.click("#job-form button[type=submit]")  # the status says "Submitting…" at once
    status = page.locator("#jobs-status")
    expect(status).to_have_text(re.compile(r"^Job [0-9a-f]{8} queued\.$"))
    short_id = status.inner_text().split()[1]
    row = page.locator(f"li.job[data-job^='{short_id}']")
    expect(row).to_have_count(1)
    return row


def test_jobs_panel_submits_a_job_and_watches_it_finish(page, server, tmp_path, redis_db) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#job-form")).to_be_hidden()
    page.fill("#token", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#job-form")).to_be_visible()

    worker = Worker(tmp_path / "worker.log", env=server.env)
    try:
        # ~8 s of steps on this machine: the page polls every second while a job runs
        job = submit(page, "mlp", "bce", steps=steps_lasting(8, {"family": "mlp", "loss": "bce"}))
        bar = job.locator("progress")
        seen: list[float] = []
        deadline = time.monotonic() + 300
        while job.get_attribute("data-state") not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline, (seen, job.inner_text())
            value = bar.evaluate("p => p.value")
            if not seen or value != seen[-1]:
                seen.append(value)
            time.sleep(0.1)
        seen.append(bar.evaluate("p => p.value"))
        assert job.get_attribute("data-state") == "SUCCESS", job.inner_text()

        # a long job, stopped from the page: it ends cancelled and says where
        long = submit(page, "mlp", "hinge", steps=1_000_000)
        expect(long).to_have_attribute("data-state", "PROGRESS", timeout=120_000)
        long.locator("button.cancel").click()
        expect(long).to_have_attribute("data-state", "CANCELLED", timeout=60_000)
        expect(long.locator(".job-line")).to_contain_text("its checkpoint is kept")
        expect(long.locator("button.cancel")).to_be_hidden()
    finally:
        worker.stop()
    assert seen == sorted(seen), seen  # the bar only moves forward
    assert any(0 < v < 1 for v in seen), seen  # ...through the middle...
    assert seen[-1] == 1  # ...to done
    expect(job.locator(".job-line")).to_contain_text("Done: mnist-mlp-cond:")
    samples = job.locator("img.samples")
    expect(samples).to_be_visible()
    expect(job.locator("img.losses")).to_be_visible()
    assert samples.evaluate("e => e.naturalWidth") == 10 * 30 + 2  # ten digits by ten
    # the whole page, for people to look at (kept in this test's output folder)
    click_digit(page, 7, seed=5, count=8)
    walk(page, 1, 2, 8)
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    assert (tmp_path / "playground.png").stat().st_size > 10_000

    # Steps left empty: the recipe's own step count, whatever today's default is (no worker now,
    # so the job waits in the queue until it is cancelled)
    default = submit(page, "dcgan", "hinge", steps=None)
    expect(default.locator(".job-spec")).to_have_text(
        f"dcgan conditional, hinge, {TrainConfig().steps} steps")
    job_id = default.get_attribute("data-job")
    asked: list[str] = []
    page.on("request", lambda r: f"/jobs/{job_id}/" in r.url and asked.append(r.url))
    default.locator("button.cancel").click()
    expect(default).to_have_attribute("data-state", "CANCELLED", timeout=60_000)
    # it never started, so it has no images and the page must not ask for them (a 404 each)
    page.wait_for_timeout(1500)
    assert asked == [], asked
    expect(default.locator("img.samples")).to_be_hidden()
    assert page.errors == []


def test_errors_are_shown_in_plain_words(page) -> None:
    from playwright.sync_api import expect

    page.fill("#count", "65")
    page.click("[data-digit='3']")
    expect(page.locator("#draw-status")).to_have_text("Count must be a whole number from 1 to 64.")
    expect(page.locator("#draw-status")).to_have_class("status error")

    page.fill("#token", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#jobs-status")).to_contain_text("The API token was not accepted")
    expect(page.locator("#token-form")).to_be_visible()  # asked for again
    # the refused request is the only thing in the console: no JavaScript error
    assert all("401" in e for e in page.errors), page.errors
