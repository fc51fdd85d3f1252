"""Drive the real Prefect 3.9 UI (the Vue app under /deployments/...) with Playwright and Debian's chromium.

Selectors, found against Prefect 3.9.1: the generated form's inputs have no ids, so `get_by_label` finds nothing.
A field is the `div.schema-form-property` around the `span.schema-form-property__label` showing its title
("Title" or "Title (Optional)"); its widget is the direct child of its own `p-label__body > fieldset`, so fields
of nested models are never picked by mistake. `X | None` fields start on the "None" branch of a button group:
pick the value branch ("str"/"int") first. A title used twice is addressed as "Parent > Child".
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


class RunRejected(RuntimeError):
    """The server refused to create the run (409: the parameters broke the deployment's schema)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"create_flow_run answered {status}: {detail}")
        self.status, self.detail = status, detail


@contextlib.contextmanager
def launch_browser(profile_dir: Path) -> Iterator[BrowserContext]:
    """Headless Debian chromium with a fresh profile (`playwright install` cannot download browsers here)."""
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("chromium is not installed: apt-get install -y chromium (.ci/run does this)")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile_dir), executable_path=executable, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def _field(scope: Page | Locator, title: str) -> Locator:
    prefix = "//" if isinstance(scope, Page) else ".//"
    return scope.locator(
        f"xpath={prefix}span[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property__label ')"
        f" and (normalize-space()='{title}' or starts-with(normalize-space(), '{title} ('))]"
        "/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]")


def find_field(page: Page, path: str) -> Locator:
    """'Title' or 'Parent > Child' to exactly one form field."""
    scope: Page | Locator = page
    parts = [p.strip() for p in path.split(">")]
    for i, part in enumerate(parts):
        found = _field(scope, part)
        if found.count() == 0:
            raise LookupError(f"no form field titled {part!r} ({path!r})")
        if found.count() > 1 and i == len(parts) - 1:
            raise LookupError(f"{found.count()} form fields titled {part!r}: use 'Parent > {part}'")
        scope = found.first
    return scope  # type: ignore[return-value]


def set_field(page: Page, path: str, value: str) -> None:
    """Type `value` into a text/number field (choosing the value branch of an `X | None` field first)."""
    field = find_field(page, path)
    field.scroll_into_view_if_needed()
    body = field.locator("xpath=./div[contains(concat(' ', normalize-space(@class), ' '), ' p-label__body ')]")
    branches = body.locator("xpath=./div[contains(@class, 'p-button-group')]")
    if branches.count():
        names = [n.strip() for n in branches.get_by_role("button").all_inner_texts()]
        wanted = "int" if re.fullmatch(r"-?\d+", value) and "int" in names else "str"
        button = branches.get_by_role("button", name=wanted, exact=True)
        if button.get_attribute("aria-selected") != "true":
            button.click()
    box = body.locator("xpath=./fieldset[contains(@class, 'schema-form-property__fields')]/*").locator(
        "input:not([type=checkbox]):not([type=search]), textarea").first
    box.fill(value)
    box.press("Tab")  # inputs commit on blur
    if box.input_value().strip() != value:
        raise AssertionError(f"field {path!r} shows {box.input_value()!r} after typing {value!r}")


def open_custom_run(page: Page, ui_url: str, deployment_id: str) -> None:
    """Deployment page → Run → Custom run (the way a user gets there)."""
    page.goto(f"{ui_url}/deployments/deployment/{deployment_id}", wait_until="domcontentloaded")
    page.get_by_role("button", name="Run", exact=True).first.click(timeout=30_000)  # exact: not the "Runs" link
    page.get_by_role("button", name="Custom run", exact=True).click(timeout=10_000)
    page.get_by_role("button", name="Submit", exact=True).wait_for(timeout=30_000)
    page.locator(".schema-form-property").first.wait_for(timeout=30_000)


def submit(page: Page, deployment_id: str, retries: int = 3) -> dict[str, Any]:
    """Tick 'Validate parameters', Submit, return the created run; a 5xx (SQLite briefly locked) is resubmitted."""
    validate = page.get_by_label("Validate parameters", exact=True)
    if validate.count():
        validate.set_checked(True)
    for attempt in range(retries + 1):
        with page.expect_response(lambda r: r.request.method == "POST" and
                                  r.url.endswith(f"/deployments/{deployment_id}/create_flow_run"),
                                  timeout=30_000) as answer:
            page.get_by_role("button", name="Submit", exact=True).click()
        response = answer.value
        if response.status == 201:
            return response.json()
        if response.status >= 500 and attempt < retries:
            page.wait_for_timeout(500 * (attempt + 1))
            continue
        raise RunRejected(response.status, response.text()[:2000])
    raise AssertionError("unreachable")


def start_custom_run(page: Page, ui_url: str, deployment_id: str, changes: Mapping[str, str],
                     shots: Path | None = None) -> dict[str, Any]:
    """Open the form, change fields by title, Submit; screenshots of the filled form (and of a refusal)."""
    open_custom_run(page, ui_url, deployment_id)
    for path, value in changes.items():
        set_field(page, path, value)
    if shots:
        page.screenshot(path=str(shots / "form-filled.png"))
    try:
        return submit(page, deployment_id)
    except RunRejected:
        if shots:
            with contextlib.suppress(PlaywrightTimeoutError):
                page.get_by_text("Error creating flow run").first.wait_for(timeout=5_000)
            page.screenshot(path=str(shots / "refused.png"))
        raise
