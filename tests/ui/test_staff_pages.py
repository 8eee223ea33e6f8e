"""The staff pages in Debian's Chromium against the real `chatbot serve`: a content owner uploads a
document and finds it in the playground; staff cannot reach the documents; sign-in and sign-out."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from chatbot.settings import DEMO_SITE
from tests.ui.conftest import start_app

if TYPE_CHECKING:
    from tests.ui.conftest import ServedApp

# Every test here talks to the real app, which starts the real local model.
pytestmark = pytest.mark.slow

ADMIN = ("site-admin", "admin password 1")
OWNER = ("kb-owner", "owner password 1")
STAFF = ("desk-agent", "staff password 1")

UPLOAD_NAME = "orbit-speaker.md"
UPLOAD_TITLE = "Lumora Orbit speaker"
FACT = "The Orbit speaker pairs when you hold its crown for 7 seconds until it chimes twice."
UPLOAD_TEXT = f"# {UPLOAD_TITLE}\n\n{FACT}\n"
QUESTION = "How do I pair the Orbit speaker?"

PAGE_LOAD_TIMEOUT_MS = 30_000
# Gradio's first page load builds the whole app in the browser: slower than a template page.
PLAYGROUND_LOAD_TIMEOUT_MS = 60_000
# Embedding a small file on two busy cores takes seconds; the margin is for the shared machine.
INDEX_TIMEOUT_MS = 120_000
# As in test_chat_page: SmolLM2 on two busy cores starts within seconds but may take minutes to
# finish, since llama-cpp-python ignores the output-token cap that langchain-openai sends.
ANSWER_STARTS_MS = 90_000
ANSWER_ENDS_MS = 240_000

# A second site that answers from its own knowledge collection.
ACME_SITE = {
    "key": "acme-site-key",
    "name": "ACME",
    "allowed_origins": ["self"],
    "collection": "acme",
}
ACME_NAME = "acme-kettle.md"
ACME_TEXT = "# ACME kettle\n\nThe ACME kettle descales when you hold Brew for seven seconds.\n"
STAFF_ONLY = ["/staff/documents", "/staff/playground/", "/staff/admin"]
# Chromium logs every 401/403 page it is sent; those refusals are what the tests ask for.
REFUSAL_LOGGED = re.compile(
    r"^Failed to load resource: the server responded with a status of 40[13]\b"
)


# ----- the app, and one browser context per user


@pytest.fixture(scope="module")
def staff_app(tmp_path_factory) -> Iterator[ServedApp]:
    """The real app with the sample help center and a first admin from the environment."""
    app = start_app(
        tmp_path_factory.mktemp("staff-pages") / "data",
        env={
            "CHATBOT_ADMIN_USERNAME": ADMIN[0],
            "CHATBOT_ADMIN_PASSWORD": ADMIN[1],
            "CHATBOT_SITES": json.dumps([DEMO_SITE.model_dump(mode="json"), ACME_SITE]),
        },
    )
    yield app
    app.stop()


GRADIO_UNLOAD = re.compile(r"AbortError: signal is aborted|Connection errored out")
# Gradio's client logs a refused call's Response object itself ("Response") when the refusal
# reaches it before the page has gone to the sign-in page; whether it does depends on timing.
GRADIO_REFUSED = re.compile(r"^Response$")


@dataclass
class Tab:
    """A page with a record of its console errors and uncaught exceptions."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def assert_no_unexpected_errors(self, *allowed: re.Pattern[str]) -> None:
        expected = (REFUSAL_LOGGED, *allowed)
        unexpected = [e for e in self.errors if not any(p.search(e) for p in expected)]
        assert not unexpected, f"errors in the page's console: {unexpected}"


@contextlib.contextmanager
def new_tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context()
    context.set_default_timeout(PAGE_LOAD_TIMEOUT_MS)
    try:
        yield Tab(context.new_page())
    finally:
        context.close()


def sign_in(page: Page, username: str, password: str) -> None:
    """Fill the sign-in form already on the page and wait until it has sent us on."""
    expect(page.get_by_role("heading", name="Staff sign-in")).to_be_visible()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator("header")).to_contain_text(username)


@contextlib.contextmanager
def signed_in(browser: Browser, app: ServedApp, user: tuple[str, str]) -> Iterator[Tab]:
    with new_tab(browser) as tab:
        tab.page.goto(f"{app.url}/login")
        sign_in(tab.page, *user)
        yield tab


def nav_links(page: Page) -> list[str]:
    return page.get_by_role("navigation", name="Staff pages").get_by_role("link").all_inner_texts()


def expect_refused(page: Page, response, code: int, title: str, message: str) -> None:
    assert response is not None and response.status == code, (
        f"{page.url}: HTTP {response and response.status}, expected {code}"
    )
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(page.get_by_role("alert")).to_contain_text(message)


@pytest.fixture(scope="module")
def accounts(browser, staff_app) -> None:
    """The first admin adds a content owner and a staff member on the admin page."""
    with signed_in(browser, staff_app, ADMIN) as tab:
        page = tab.page
        page.goto(f"{staff_app.url}/staff/admin")
        for (username, password), role in ((OWNER, "content_owner"), (STAFF, "staff")):
            form = page.locator("form", has=page.get_by_role("button", name="Add user"))
            form.get_by_label("User name").fill(username)
            form.get_by_label("Role").select_option(role)
            form.get_by_label("Password").fill(password)
            form.get_by_role("button", name="Add user").click()
            expect(page.get_by_role("status")).to_have_text(f"Added {username} ({role}).")
            expect(page.locator(f'tr[data-user="{username}"] .chip')).to_have_text(role)
        tab.assert_no_unexpected_errors()


# ----- a content owner: upload, list, ask


@dataclass
class Uploaded:
    """The content owner's tab after the upload, with the file's row in the documents table."""

    tab: Tab
    result: str
    row: list[str]


@pytest.fixture(scope="module")
def uploaded(browser, staff_app, accounts, tmp_path_factory) -> Iterator[Uploaded]:
    """The content owner, sent to sign in by the documents page, uploads a Markdown file."""
    path = tmp_path_factory.mktemp("upload") / UPLOAD_NAME
    path.write_text(UPLOAD_TEXT)
    with new_tab(browser) as tab:
        page = tab.page
        refused = page.goto(f"{staff_app.url}/staff/documents")
        expect_refused(page, refused, 401, "Sign-in needed", "Please sign in.")
        page.get_by_role("link", name="Sign in").click()
        sign_in(page, *OWNER)
        assert page.url == f"{staff_app.url}/staff/documents", "sign-in did not return to the page"
        # Two sites answer from two collections: the page says which one it shows.
        expect(page.get_by_role("heading", level=1)).to_have_text("Documents in knowledge")

        page.locator("input#files[type=file]").set_input_files(path)
        with page.expect_response(f"{staff_app.url}/api/v1/documents", timeout=INDEX_TIMEOUT_MS):
            page.get_by_role("button", name="Upload", exact=True).click()
        results = page.locator("#upload-results li")
        expect(results).to_have_count(1)
        result = results.inner_text()
        row = page.locator("#documents tr[data-document]").filter(
            has=page.get_by_role("cell", name=UPLOAD_NAME, exact=True)
        )
        expect(row).to_have_count(1)
        yield Uploaded(tab, result, row.locator("td").all_inner_texts())


def test_the_uploaded_file_is_added_and_listed(uploaded, staff_app):
    page = uploaded.tab.page
    added = page.locator("#upload-results li")
    expect(added).to_have_attribute("data-status", "added")
    assert uploaded.result.split() == [UPLOAD_NAME, "added"], uploaded.result
    expect(page.locator("#upload-progress")).to_be_hidden()
    expect(page.get_by_role("button", name="Upload", exact=True)).to_be_enabled()

    assert nav_links(page) == ["Playground", "Conversations", "Hand-offs", "Documents"]
    title, source, chunks, size, uploader, updated, _ = uploaded.row
    assert (title, source, uploader) == (UPLOAD_TITLE, UPLOAD_NAME, OWNER[0]), uploaded.row
    assert chunks.isdigit() and int(chunks) >= 1, uploaded.row
    assert size.endswith(("bytes", "KB")) and updated, uploaded.row
    # The new row is the server's, not only the script's: a reload shows it too.
    page.reload()
    expect(page.get_by_role("link", name=UPLOAD_TITLE, exact=True)).to_be_visible()
    uploaded.tab.assert_no_unexpected_errors()


def test_the_playground_retrieves_the_uploaded_document(uploaded, staff_app):
    tab = uploaded.tab
    page = tab.page
    page.get_by_role("navigation", name="Staff pages").get_by_role(
        "link", name="Playground"
    ).click()
    question = page.locator("#playground-question textarea")
    expect(question).to_be_editable(timeout=PLAYGROUND_LOAD_TIMEOUT_MS)
    expect(page.locator("#playground-user")).to_contain_text(f"Signed in as {OWNER[0]}")

    question.fill(QUESTION)
    page.locator("#playground-ask").click()
    chunks = page.locator("#playground-chunks")
    outcome = page.locator("#playground-outcome")
    try:
        # The chunks are shown as soon as they are retrieved, before the model answers.
        expect(chunks).to_contain_text(UPLOAD_NAME, timeout=ANSWER_STARTS_MS)
        expect(outcome).to_contain_text("Handed off:", timeout=ANSWER_ENDS_MS)
    except (AssertionError, PlaywrightTimeoutError) as exc:
        raise AssertionError(f"{exc}\n{staff_app.output()}") from exc

    expect(outcome).to_contain_text("Handed off: no")
    expect(outcome).not_to_contain_text("Error:")
    expect(chunks).to_contain_text(FACT)
    # The uploaded document is the best match, and its chunk was quoted to the model.
    row = chunks.get_by_role("row").filter(
        has=page.get_by_role("gridcell", name=UPLOAD_NAME, exact=True)
    )
    expect(row).to_have_count(1)
    rank, source, section, *_scores, in_prompt, text = row.get_by_role("gridcell").all_inner_texts()
    assert (rank, source, in_prompt, text.strip()) == ("1", UPLOAD_NAME, "yes", FACT), section
    assert UPLOAD_TITLE in section
    expect(page.locator("#playground-prompt textarea")).to_have_value(re.compile(re.escape(FACT)))
    expect(page.locator("#playground-query textarea")).not_to_have_value("")
    expect(page.locator("#playground-answer textarea")).to_have_value(re.compile(r"\S"))
    tab.assert_no_unexpected_errors()


SENT_FILES_SPY = """() => {
  const send = XMLHttpRequest.prototype.send;
  window.sentFiles = [];
  window.sentRequests = [];
  XMLHttpRequest.prototype.send = function (body) {
    if (body instanceof FormData) {
      const names = [...body.entries()].map(([, v]) => v.name);
      window.sentFiles.push(...names);
      window.sentRequests.push(names);
    }
    return send.call(this, body);
  };
}"""


def test_a_copy_and_an_unsupported_file_are_reported_by_name(uploaded, staff_app, tmp_path):
    page = uploaded.tab.page
    copy = tmp_path / "orbit-copy.md"
    copy.write_text(UPLOAD_TEXT)
    program = tmp_path / "setup.exe"
    program.write_bytes(b"MZ\x90\x00")
    page.goto(f"{staff_app.url}/staff/documents")
    rows_before = page.locator("#documents tr[data-document]").count()

    page.evaluate(SENT_FILES_SPY)
    page.locator("input#files").set_input_files([copy, program])
    with page.expect_response(
        f"{staff_app.url}/api/v1/documents", timeout=INDEX_TIMEOUT_MS
    ) as sent:
        page.get_by_role("button", name="Upload", exact=True).click()
    # A duplicate is reported, not refused: the batch is a 400 only when every file fails.
    assert sent.value.status == 200, sent.value.text()
    results = page.locator("#upload-results li")
    expect(results).to_have_count(2)
    duplicate, failed = results.all()
    expect(duplicate).to_have_attribute("data-status", "duplicate")
    expect(duplicate).to_contain_text(copy.name)
    expect(duplicate).to_contain_text(UPLOAD_NAME)  # names the document it duplicates
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_contain_text(program.name)
    expect(failed).to_contain_text("unsupported file type")
    expect(page.locator("#upload-progress")).to_be_hidden()
    # One file per request: each is reported as soon as it is indexed.
    assert page.evaluate("window.sentRequests") == [[copy.name], [program.name]]
    expect(page.locator("#documents tr[data-document]")).to_have_count(rows_before)
    expect(page.get_by_role("cell", name=copy.name, exact=True)).to_have_count(0)
    # The unsupported file's own request is refused (400: its only file failed).
    uploaded.tab.assert_no_unexpected_errors(re.compile(r"status of 400"))
    uploaded.tab.errors.clear()  # the later tests use this tab too


def test_a_file_over_the_limit_is_named_and_not_sent_and_the_others_are_added(
    uploaded, staff_app, tmp_path
):
    page = uploaded.tab.page
    limit = 20_000_000  # retrieval.max_file_bytes
    big = tmp_path / "catalogue.md"
    with big.open("wb") as out:
        out.truncate(limit + 1)
    good = tmp_path / "orbit-battery.md"
    good.write_text("# Orbit battery\n\nThe Orbit speaker plays for 14 hours on a charge.\n")
    page.goto(f"{staff_app.url}/staff/documents")

    # Record the names of the files the page puts in its request.
    page.evaluate(SENT_FILES_SPY)
    page.locator("input#files").set_input_files([big, good])
    page.get_by_role("button", name="Upload", exact=True).click()
    results = page.locator("#upload-results li")
    expect(results).to_have_count(2, timeout=INDEX_TIMEOUT_MS)

    assert page.evaluate("window.sentFiles") == [good.name]
    refused, added = results.all()
    expect(refused).to_have_attribute("data-status", "failed")
    expect(refused).to_contain_text(
        f"{big.name} failed the file is 20,000,001 bytes, over the limit of 20,000,000"
    )
    expect(added).to_have_attribute("data-status", "added")
    expect(added).to_contain_text(good.name)
    expect(page.get_by_role("cell", name=good.name, exact=True)).to_have_count(1)
    uploaded.tab.assert_no_unexpected_errors()


# Every text the progress label shows, in order, and how full the bar is at each.
LABEL_SPY = """() => {
  const label = document.querySelector("#upload-progress span");
  const bar = document.querySelector("#upload-progress progress");
  window.labels = [];
  window.fills = [];
  new MutationObserver(() => {
    window.labels.push(label.textContent);
    window.fills.push(bar.value / bar.max);
  }).observe(label, { childList: true, characterData: true, subtree: true });
}"""
COUNTED = re.compile(r"Indexing orbit-manual\.md: ([\d,]+) of ([\d,]+) passages")


def test_a_large_file_shows_how_far_its_indexing_has_got(uploaded, staff_app, tmp_path):
    page = uploaded.tab.page
    manual = tmp_path / "orbit-manual.md"
    paragraphs = (
        f"Orbit setting {n}: " + f"the speaker keeps setting {n} for {n} minutes. " * 18
        for n in range(400)
    )
    manual.write_text("# Orbit manual\n\n" + "\n\n".join(paragraphs) + "\n")
    page.goto(f"{staff_app.url}/staff/documents")
    page.evaluate(LABEL_SPY)

    page.locator("input#files").set_input_files(manual)
    page.get_by_role("button", name="Upload", exact=True).click()
    results = page.locator("#upload-results li")
    expect(results).to_have_count(1, timeout=INDEX_TIMEOUT_MS)

    expect(results).to_have_attribute("data-status", "added")
    labels, fills = page.evaluate("window.labels"), page.evaluate("window.fills")
    counted = [
        (m.groups(), fill)
        for m, fill in zip(map(COUNTED.fullmatch, labels), fills, strict=True)
        if m
    ]
    assert counted, labels
    done = [int(d.replace(",", "")) for (d, _), _ in counted]
    totals = {int(t.replace(",", "")) for (_, t), _ in counted}
    total = totals.pop()
    assert not totals and total >= 400, labels
    assert done == sorted(done), labels
    # The bar follows the indexing: half full once sent, full only when every passage is in.
    counted_fills = [fill for _, fill in counted]
    assert counted_fills == sorted(counted_fills), (labels, fills)
    for n, fill in zip(done, counted_fills, strict=True):
        assert fill == pytest.approx(0.5 + 0.5 * n / total, abs=0.01), (labels, fills)
    # The list counts the passages as the label did ("4,434", not "4434").
    row = page.get_by_role("row").filter(has_text="orbit-manual.md")
    expect(row.get_by_role("cell", name=f"{total:,}", exact=True)).to_have_count(1)
    expect(page.locator("#upload-progress")).to_be_hidden()
    uploaded.tab.assert_no_unexpected_errors()


def test_a_lost_connection_keeps_what_was_indexed_and_files_past_the_limit_are_not_sent(
    uploaded, staff_app, tmp_path
):
    page = uploaded.tab.page
    names = ["lamp-a.md", "lamp-b.md", "lamp-c.md", "lamp-d.md"]
    paths = []
    for n, name in enumerate(names):
        paths.append(tmp_path / name)
        paths[-1].write_text(f"# Lamp {n}\n\nLamp {n} runs for {n + 3} hours on a charge.\n")
    page.goto(f"{staff_app.url}/staff/documents")
    # Three files per upload (the setting is the server's; the page reads it from the form).
    page.locator("form[data-upload][data-method=POST]").evaluate(
        "form => { form.dataset.maxFiles = '3'; }"
    )
    requests = []

    def second_request_is_lost(route):
        requests.append(route.request.method)
        route.abort() if len(requests) == 2 else route.continue_()

    page.route(f"{staff_app.url}/api/v1/documents", second_request_is_lost)
    try:
        page.locator("input#files").set_input_files(paths)
        page.get_by_role("button", name="Upload", exact=True).click()
        results = page.locator("#upload-results li")
        expect(results).to_have_count(4, timeout=INDEX_TIMEOUT_MS)
    finally:
        page.unroute(f"{staff_app.url}/api/v1/documents")

    expect(page.locator("#upload-progress")).to_be_hidden()
    over, added, lost, unsent = results.all()
    expect(over).to_contain_text("lamp-d.md failed over the limit of 3 files per upload")
    expect(added).to_contain_text("lamp-a.md added")
    expect(lost).to_contain_text("lamp-b.md failed the connection was lost")
    expect(unsent).to_contain_text("lamp-c.md failed not sent: the connection was lost")
    assert requests == ["POST", "POST"], "nothing sent after the connection was lost"
    expect(page.get_by_role("cell", name="lamp-a.md", exact=True)).to_have_count(1)
    # The aborted request is logged by the browser.
    uploaded.tab.assert_no_unexpected_errors(re.compile(r"net::ERR_FAILED"))
    uploaded.tab.errors.clear()  # the later tests use this tab too


def test_a_document_uploaded_to_a_sites_collection_stays_there(uploaded, staff_app, tmp_path):
    page = uploaded.tab.page
    path = tmp_path / ACME_NAME
    path.write_text(ACME_TEXT)
    page.goto(f"{staff_app.url}/staff/documents")
    picker = page.get_by_role("navigation", name="Knowledge collections")
    expect(picker.get_by_role("link")).to_have_text(["knowledge", "acme"])
    picker.get_by_role("link", name="acme", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Documents in acme")
    expect(page.locator("#documents tr[data-document]")).to_have_count(0)

    page.locator("input#files").set_input_files(path)
    with page.expect_response(
        f"{staff_app.url}/api/v1/documents?collection=acme", timeout=INDEX_TIMEOUT_MS
    ) as sent:
        page.get_by_role("button", name="Upload", exact=True).click()
    assert sent.value.status == 200, sent.value.text()
    expect(page.locator("#upload-results li")).to_have_attribute("data-status", "added")
    # The refreshed table is the acme collection's: the new document and nothing else.
    rows = page.locator("#documents tr[data-document]")
    expect(rows).to_have_count(1)
    expect(rows.get_by_role("cell", name=ACME_NAME, exact=True)).to_have_count(1)
    rows.get_by_role("link", name="ACME kettle").click()
    expect(page.get_by_role("row", name="Collection acme")).to_be_visible()
    expect(page.locator("#chunks")).to_contain_text("descales when you hold Brew")

    page.get_by_role("link", name="← All documents").click()
    assert page.url.endswith("/staff/documents?collection=acme"), page.url
    picker.get_by_role("link", name="knowledge", exact=True).click()
    expect(page.get_by_role("cell", name=UPLOAD_NAME, exact=True)).to_have_count(1)
    expect(page.get_by_role("cell", name=ACME_NAME, exact=True)).to_have_count(0)
    uploaded.tab.assert_no_unexpected_errors()


def test_a_folder_is_uploaded_with_its_files_named_as_chatbot_ingest_names_them(
    uploaded, staff_app, tmp_path
):
    page = uploaded.tab.page
    help_center = tmp_path / "help-center"
    for folder, text in (
        ("billing", "# Billing FAQ\n\nInvoices for the Orbit plan go out on the 3rd.\n"),
        ("setup", "# Setup FAQ\n\nOrbit pairs when its ring blinks green twice.\n"),
    ):
        (help_center / folder).mkdir(parents=True)
        (help_center / folder / "faq.md").write_text(text)
    (help_center / "setup" / "ring.png").write_bytes(b"\x89PNG\r\n")
    (help_center / "include").mkdir()
    (help_center / "include" / "note.md").write_text("A snippet.\n")
    (help_center / ".drafts").mkdir()
    (help_center / ".drafts" / "next.md").write_text("# Draft\n\nNot yet.\n")
    page.goto(f"{staff_app.url}/staff/documents")
    page.evaluate(SENT_FILES_SPY)

    page.locator("input#folder").set_input_files(help_center)
    page.get_by_role("button", name="Upload", exact=True).click()

    # The two skipped files first, then each file sent as it is indexed.
    results = page.locator("#upload-results li")
    expect(results).to_have_count(4, timeout=2 * INDEX_TIMEOUT_MS)
    expect(page.locator("#upload-progress")).to_be_hidden()
    statuses = {
        item.locator("strong").inner_text(): item.get_attribute("data-status")
        for item in results.all()
    }
    assert statuses == {
        "billing/faq.md": "added",
        "setup/faq.md": "added",
        "setup/ring.png": "skipped",
        "include/note.md": "skipped",
    }
    assert sorted(page.evaluate("window.sentFiles")) == ["billing/faq.md", "setup/faq.md"]
    for name in ("billing/faq.md", "setup/faq.md"):
        expect(page.get_by_role("cell", name=name, exact=True)).to_have_count(1)
    expect(page.locator("input#files")).to_have_attribute("required", "")
    uploaded.tab.assert_no_unexpected_errors()


def test_a_folder_with_nothing_to_send_or_a_name_chosen_twice_is_reported(
    uploaded, staff_app, tmp_path
):
    page = uploaded.tab.page
    hidden = tmp_path / "drafts"
    (hidden / ".wip").mkdir(parents=True)
    (hidden / ".wip" / "next.md").write_text("# Next\n\nNot yet.\n")
    page.goto(f"{staff_app.url}/staff/documents")

    page.locator("input#folder").set_input_files(hidden)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-results li.error")).to_have_text(
        "The folder holds no files to upload (hidden files are passed over)."
    )
    expect(page.locator("input#files")).to_have_attribute("required", "")

    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "lamp-notes.md").write_text("# Lamp notes\n\nThe lamp dims with a long press.\n")
    page.locator("input#files").set_input_files(twice / "lamp-notes.md")
    page.locator("input#folder").set_input_files(twice)
    page.evaluate(SENT_FILES_SPY)
    page.get_by_role("button", name="Upload", exact=True).click()

    results = page.locator("#upload-results li")
    expect(results).to_have_count(2, timeout=INDEX_TIMEOUT_MS)
    expect(page.locator("#upload-progress")).to_be_hidden()
    assert sorted(
        (item.locator("strong").inner_text(), item.get_attribute("data-status"))
        for item in results.all()
    ) == [("lamp-notes.md", "added"), ("lamp-notes.md", "failed")]
    expect(results.filter(has_text="failed")).to_contain_text(
        "another file in this upload has the same name"
    )
    assert page.evaluate("window.sentFiles") == ["lamp-notes.md"]
    uploaded.tab.assert_no_unexpected_errors()


# ----- staff without the content_owner role


def test_staff_cannot_open_the_documents_page_but_can_open_the_playground(
    browser, staff_app, accounts
):
    with signed_in(browser, staff_app, STAFF) as tab:
        page = tab.page
        page.goto(f"{staff_app.url}/staff/tickets")
        expect(page.get_by_role("heading", level=1)).to_have_text("Hand-offs")
        assert nav_links(page) == ["Playground", "Conversations", "Hand-offs"], nav_links(page)

        refused = page.goto(f"{staff_app.url}/staff/documents")
        expect_refused(page, refused, 403, "Not allowed", "needs the content_owner role")
        expect(page.get_by_role("link", name="Documents")).to_have_count(0)
        expect(page.locator("input[type=file]")).to_have_count(0)
        api = page.request.get(f"{staff_app.url}/api/v1/documents")
        assert api.status == 403 and api.json()["error"]["code"] == "forbidden", api.text()

        opened = page.goto(f"{staff_app.url}/staff/playground/")
        assert opened is not None and opened.status == 200
        expect(page.locator("#playground-question textarea")).to_be_editable(
            timeout=PLAYGROUND_LOAD_TIMEOUT_MS
        )
        expect(page.locator("#playground-user")).to_contain_text(f"Signed in as {STAFF[0]}")
        tab.assert_no_unexpected_errors()


# ----- nobody signed in


@pytest.mark.parametrize("path", STAFF_ONLY)
def test_anonymous_visitors_are_asked_to_sign_in(browser, staff_app, path):
    with new_tab(browser) as tab:
        page = tab.page
        refused = page.goto(staff_app.url + path)
        expect_refused(page, refused, 401, "Sign-in needed", "This page is for support staff.")
        expect(page.get_by_role("navigation", name="Staff pages")).to_have_count(0)
        expect(page.get_by_role("link", name="Sign in")).to_have_attribute(
            "href", f"/login?next={path}"
        )
        tab.assert_no_unexpected_errors()


def test_the_admin_page_asks_before_removing_a_user_and_a_reload_repeats_nothing(
    browser, staff_app, accounts
):
    leaving = "leaving-agent"
    with signed_in(browser, staff_app, ADMIN) as tab:
        page = tab.page
        page.goto(f"{staff_app.url}/staff/admin")
        form = page.locator("form", has=page.get_by_role("button", name="Add user"))
        form.get_by_label("User name").fill(leaving)
        form.get_by_label("Password").fill("leaving password 1")
        form.get_by_role("button", name="Add user").click()
        expect(page.get_by_role("status")).to_have_text(f"Added {leaving} (staff).")
        # The page after the form is a plain GET: reloading it adds no one and says nothing.
        page.reload()
        expect(page.get_by_role("status")).to_have_count(0)
        expect(page.get_by_role("alert")).to_have_count(0)
        remove = page.locator(f'tr[data-user="{leaving}"]').get_by_role("button", name="Remove")

        asked: list[str] = []

        def dismiss(dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        remove.click()
        expect(page.locator(f'tr[data-user="{leaving}"]')).to_have_count(1)
        assert asked == [f"Remove {leaving}? Their sign-ins and API tokens stop working."]

        page.once("dialog", lambda dialog: dialog.accept())
        remove.click()
        expect(page.get_by_role("status")).to_have_text(f"Removed {leaving}.")
        expect(page.locator(f'tr[data-user="{leaving}"]')).to_have_count(0)
        tab.assert_no_unexpected_errors()


# ----- signing out


def test_signing_out_ends_the_session(browser, staff_app, accounts):
    with signed_in(browser, staff_app, STAFF) as tab:
        page = tab.page
        page.goto(f"{staff_app.url}/staff/tickets")
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        page.locator("header").get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{staff_app.url}/login", timeout=30_000)
        expect(page.get_by_role("heading", name="Staff sign-in")).to_be_visible()

        refused = page.goto(f"{staff_app.url}/staff/tickets")
        expect_refused(page, refused, 401, "Sign-in needed", "Please sign in.")
        # The old cookie, replayed by someone who kept it, is dead on the server too.
        replayed = httpx.get(f"{staff_app.url}/staff/tickets", cookies=cookies, timeout=30)
        assert replayed.status_code == 401
        tab.assert_no_unexpected_errors()


def test_an_upload_after_the_sign_in_ended_leads_to_the_sign_in_page_and_back(
    browser, staff_app, accounts, tmp_path
):
    path = tmp_path / "late.md"
    path.write_text("# Late\n\nWritten after the sign-in ended.\n")
    with signed_in(browser, staff_app, OWNER) as tab:
        page = tab.page
        page.goto(f"{staff_app.url}/staff/documents")
        page.context.clear_cookies()  # signed out elsewhere, or the session ran out

        page.locator("input#files[type=file]").set_input_files(path)
        page.get_by_role("button", name="Upload", exact=True).click()

        results = page.locator("#upload-results")
        expect(results).to_contain_text("your sign-in has ended")
        expect(results).not_to_contain_text("API token")
        page.get_by_test_id("sign-in-again").click()
        sign_in(page, *OWNER)
        assert page.url == f"{staff_app.url}/staff/documents", "sign-in did not return to the page"
        tab.assert_no_unexpected_errors()


def open_playground(tab: Tab, app: ServedApp) -> Page:
    """The playground in ``tab``, once it can be used."""
    tab.page.goto(f"{app.url}/staff/playground/")
    question = tab.page.locator("#playground-question textarea")
    expect(question).to_be_editable(timeout=PLAYGROUND_LOAD_TIMEOUT_MS)
    return tab.page


def test_a_playground_whose_sign_in_ended_goes_to_the_sign_in_page(browser, staff_app, accounts):
    with signed_in(browser, staff_app, STAFF) as tab:
        page = open_playground(tab, staff_app)
        page.context.clear_cookies()  # signed out elsewhere, or the session ran out

        # The page's next call to the server (Ask, or one of Gradio's own) is refused. Not
        # Gradio's "Connection to the server was lost", but the sign-in page, which leads back
        # to the playground.
        with contextlib.suppress(PlaywrightError):  # it may already be on its way
            page.locator("#playground-ask").click(timeout=5_000)
        page.wait_for_url(f"{staff_app.url}/login?next=%2Fstaff%2Fplayground%2F", timeout=30_000)
        page.get_by_label("User name").fill(STAFF[0])
        page.get_by_label("Password").fill(STAFF[1])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{staff_app.url}/staff/playground/", timeout=30_000)
        expect(page.locator("#playground-user")).to_contain_text(
            f"Signed in as {STAFF[0]}", timeout=PLAYGROUND_LOAD_TIMEOUT_MS
        )
        tab.assert_no_unexpected_errors(GRADIO_UNLOAD, GRADIO_REFUSED)


def test_the_playground_signs_out_too(browser, staff_app, accounts):
    with signed_in(browser, staff_app, STAFF) as tab:
        page = open_playground(tab, staff_app)
        sign_out = page.locator("#playground-sign-out")
        expect(sign_out).to_be_visible()
        tab.assert_no_unexpected_errors()
        sign_out.click()
        # The form posts to /logout, which answers with a redirect to the sign-in page.
        page.wait_for_url(f"{staff_app.url}/login", timeout=30_000)

        refused = page.goto(f"{staff_app.url}/staff/playground/")
        expect_refused(page, refused, 401, "Sign-in needed", "This page is for support staff.")
        # Leaving a Gradio page aborts its open connection, which Gradio logs as it unloads.
        tab.assert_no_unexpected_errors(GRADIO_UNLOAD)
