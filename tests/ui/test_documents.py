"""Documents for content owners over HTTP: who may manage them, and what retrieval sees after an
upload, a replacement or a deletion (real Chroma store, real embedder)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from python_multipart import MultipartParser

from chatbot.service import ChatService
from chatbot.settings import SiteSettings
from chatbot.users import Role
from knowledge.ingest import ingest_paths
from knowledge.retriever import HybridRetriever
from knowledge.store import KnowledgeStore
from tests.conftest import SAMPLE_HELP
from tests.knowledge.conftest import text_pdf
from ui import documents
from ui.documents import _FileParts, upload_name
from ui.web import create_web_app

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
ROLES = [Role.STAFF, Role.CONTENT_OWNER, Role.ADMIN]
OTHER_ARTICLES = ["reset-the-hub.md", "warranty.md", "refund-policy.md"]

LANTERN_V1 = b"""# Charge the Glowmate lantern

The Glowmate camping lantern charges over its magnetic USB-C cable. A full charge takes three
hours, and the battery then lasts 14 hours on the brightest setting.
"""
LANTERN_V2 = b"""# Charge the Glowmate lantern

The Glowmate camping lantern now charges from its built-in solar panel. Leave it in direct
sunlight for a day, and the battery then lasts 30 hours on the brightest setting.
"""
QUESTION = "How do I charge the Glowmate camping lantern?"


@pytest.fixture
def make_app(store) -> Iterator[Callable[..., tuple]]:
    """``make_app(settings)``: the web app on the test's own store, with one user per role."""
    made = []

    def make(settings) -> tuple:
        service = ChatService(settings, store, HybridRetriever(store), None)
        web = create_web_app(service, settings)
        for role in ROLES:
            web.state.users.add_user(role.value, PASSWORD, role, actor="test")
        made.append((web, service))
        return web, service

    yield make
    for web, service in made:
        web.state.desk.close()
        service.close()


@pytest.fixture
def app_service(make_app, settings):
    return make_app(settings)


@pytest.fixture
def app(app_service):
    return app_service[0]


@pytest.fixture
def service(app_service) -> ChatService:
    return app_service[1]


def signed_in(app, username: str) -> TestClient:
    # As a browser on the app's own pages: it names where a request comes from.
    client = TestClient(app, headers={"Sec-Fetch-Site": "same-origin"})
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client


def md(name: str, body: bytes) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, body, "text/markdown"))


def sample(name: str) -> tuple[str, tuple[str, bytes, str]]:
    return md(name, (SAMPLE_HELP / name).read_bytes())


def upload(client: TestClient, *files) -> dict:
    response = client.post("/api/v1/documents", files=list(files))
    assert response.status_code == 200, response.text
    return {r["file"]: r for r in response.json()["results"]}


def retrieved(service: ChatService, question: str) -> list:
    return service.retrieve(question).hits


def consistent(store: KnowledgeStore) -> bool:
    """Every vector belongs to a live version, and every live version is complete."""
    docs = store.documents()
    return store.chunk_count() == sum(d.chunk_count for d in docs) == len(store.live_chunks())


# ----- who may do what
@pytest.fixture
def lantern_id(app) -> str:
    result = upload(signed_in(app, "content_owner"), md("lantern.md", LANTERN_V1))
    return result["lantern.md"]["document"]["id"]


def routes(doc_id: str) -> list[tuple[str, str, dict]]:
    one = {"file": ("lantern.md", LANTERN_V2, "text/markdown")}
    many = [md("other.md", b"# Other\n\nSomething else entirely.\n")]
    return [
        ("GET", "/staff/documents", {}),
        ("POST", "/staff/documents", {"files": many}),
        ("GET", f"/staff/documents/{doc_id}", {}),
        ("POST", f"/staff/documents/{doc_id}/replace", {"files": one}),
        ("POST", f"/staff/documents/{doc_id}/delete", {}),
        ("GET", "/api/v1/documents", {}),
        ("POST", "/api/v1/documents", {"files": many}),
        ("GET", f"/api/v1/documents/{doc_id}", {}),
        ("PUT", f"/api/v1/documents/{doc_id}", {"files": one}),
        ("DELETE", f"/api/v1/documents/{doc_id}", {}),
    ]


def customer_headers(client: TestClient) -> dict:
    session = client.post("/api/v1/sessions", headers={"X-Site-Key": "demo-site-key"}, json={})
    assert session.status_code == 201, session.text
    return {"Authorization": f"Bearer {session.json()['session_token']}"}


def test_anonymous_callers_and_customers_get_401_on_every_documents_route(app, lantern_id, store):
    client = TestClient(app)
    as_customer = customer_headers(client)
    for method, path, body in routes(lantern_id):
        plain = client.request(method, path, follow_redirects=False, **body)
        customer = client.request(method, path, headers=as_customer, follow_redirects=False, **body)
        assert plain.status_code == 401, (method, path)
        assert customer.status_code == 401, (method, path)
    assert [d.source for d in store.documents()] == ["lantern.md"]
    assert b"magnetic" in store.document_chunks("lantern.md")[0].text.encode()


def test_staff_get_403_on_every_documents_route(app, lantern_id, store):
    client = signed_in(app, "staff")
    for method, path, body in routes(lantern_id):
        response = client.request(method, path, follow_redirects=False, **body)
        assert response.status_code == 403, (method, path)
    page = client.get("/staff/documents")
    assert "content_owner role" in page.text
    assert "/staff/documents" not in client.get("/staff/tickets").text
    assert [d.source for d in store.documents()] == ["lantern.md"]


@pytest.mark.parametrize("role", [Role.CONTENT_OWNER, Role.ADMIN])
def test_content_owners_and_admins_may_use_every_documents_route(app, lantern_id, role):
    client = signed_in(app, role.value)
    expected = {"DELETE": 204, "POST /staff/documents/{}/delete": 303}
    for method, path, body in routes(lantern_id):
        response = client.request(method, path, follow_redirects=False, **body)
        pattern = f"{method} {path.replace(lantern_id, '{}')}"
        wanted = expected.get(pattern, expected.get(method, 200))
        assert response.status_code == wanted, (method, path, response.text)
        if path.endswith("/delete") or method == "DELETE":
            # Put it back for the routes that follow.
            upload(client, md("lantern.md", LANTERN_V1))
    assert "/staff/documents" in client.get("/staff/tickets").text


def test_an_api_token_of_a_content_owner_authorizes_the_api(app, lantern_id):
    _, secret = app.state.users.create_token("content_owner", "cms sync", actor="admin")
    client = TestClient(app)
    listed = client.get("/api/v1/documents", headers={"Authorization": f"Bearer {secret}"})

    assert listed.status_code == 200
    assert [d["source"] for d in listed.json()] == ["lantern.md"]


def test_a_form_posted_from_another_site_is_refused(app, lantern_id, store):
    client = signed_in(app, "content_owner")
    response = client.post(
        f"/staff/documents/{lantern_id}/delete", headers={"Origin": "https://evil.example"}
    )

    assert response.status_code == 403
    assert [d.source for d in store.documents()] == ["lantern.md"]


# ----- what retrieval sees
def test_upload_replace_and_delete_as_seen_by_retrieval(app, service, store):
    client = signed_in(app, "content_owner")
    results = upload(client, md("lantern.md", LANTERN_V1), *map(sample, OTHER_ARTICLES))
    assert {r["status"] for r in results.values()} == {"added"}
    lantern = results["lantern.md"]["document"]
    assert lantern["uploader"] == "content_owner" and lantern["chunk_count"] >= 1

    hits = retrieved(service, QUESTION)
    assert hits[0].source == "lantern.md"
    assert any("magnetic USB-C cable" in c.text for c in hits[0].chunks)

    replaced = client.put(
        f"/api/v1/documents/{lantern['id']}",
        files={"file": ("lantern-v2.md", LANTERN_V2, "text/markdown")},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["status"] == "updated"
    assert replaced.json()["document"]["source"] == "lantern.md"

    hits = retrieved(service, "Can the Glowmate lantern charge from sunlight with a solar panel?")
    assert hits[0].source == "lantern.md"
    lantern_texts = [c.text for h in hits if h.source == "lantern.md" for c in h.chunks]
    lantern_texts += [c.text for c in store.live_chunks() if c.source == "lantern.md"]
    assert all("solar panel" in t and "magnetic" not in t for t in lantern_texts)
    assert consistent(store)

    deleted = client.delete(f"/api/v1/documents/{lantern['id']}")
    assert deleted.status_code == 204
    assert client.get(f"/api/v1/documents/{lantern['id']}").status_code == 404
    assert all(h.source != "lantern.md" for h in retrieved(service, QUESTION))
    assert all(c.source != "lantern.md" for c in store.live_chunks())
    assert consistent(store)

    # Nor after another change, nor when the store is opened again.
    upload(client, md("other.md", b"# Lamp posts\n\nStreet lamps are not our products.\n"))
    assert all(h.source != "lantern.md" for h in retrieved(service, QUESTION))
    reopened = KnowledgeStore(store.data_dir, store.embeddings)
    assert all(c.source != "lantern.md" for c in reopened.live_chunks())
    assert consistent(reopened)


def test_a_bad_batch_refuses_each_bad_file_by_name_and_indexes_the_good_one(
    make_app, settings, store
):
    small = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"max_file_bytes": 2000})}
    )
    app, service = make_app(small)
    client = signed_in(app, "content_owner")

    response = client.post(
        "/api/v1/documents",
        files=[
            ("files", ("manual.pdf", b"%PDF-1.4\nthis is not really a PDF\n", "application/pdf")),
            ("files", ("empty.md", b"", "text/markdown")),
            ("files", ("huge.md", b"# Huge\n\n" + b"All about lanterns. " * 300, "text/markdown")),
            ("files", ("setup.exe", b"MZ\x90\x00", "application/octet-stream")),
            md("lantern.md", LANTERN_V1),
        ],
    )

    assert response.status_code == 200
    results = {r["file"]: r for r in response.json()["results"]}
    assert list(results) == ["manual.pdf", "empty.md", "huge.md", "setup.exe", "lantern.md"]
    refused = {name: r["reason"] for name, r in results.items() if r["status"] == "failed"}
    assert set(refused) == {"manual.pdf", "empty.md", "huge.md", "setup.exe"}
    assert refused["manual.pdf"].startswith("the PDF could not be read")
    assert refused["empty.md"] == "the file is empty"
    assert refused["huge.md"] == "the file is 6,008 bytes, over the limit of 2,000"
    assert refused["setup.exe"].startswith("unsupported file type '.exe'")
    assert results["lantern.md"]["status"] == "added"
    assert [d.source for d in store.documents()] == ["lantern.md"]
    assert retrieved(service, QUESTION)[0].source == "lantern.md"
    assert consistent(store)


def test_every_file_refused_is_a_400_with_the_results(app, store):
    client = signed_in(app, "content_owner")
    response = client.post("/api/v1/documents", files=[md("empty.md", b"")])

    assert response.status_code == 400
    assert response.json()["results"] == [
        {"file": "empty.md", "status": "failed", "reason": "the file is empty", "document": None}
    ]
    assert store.documents() == []


def test_a_corrupt_pdf_beside_a_good_pdf(app, store):
    client = signed_in(app, "content_owner")
    good = text_pdf(["Glowmate lantern manual", "Charge the lantern for three hours."])
    broken = text_pdf(["Broken"], stream_length=b"99999")[:-40]

    results = upload(
        client,
        ("files", ("manual.pdf", good, "application/pdf")),
        ("files", ("broken.pdf", broken, "application/pdf")),
    )

    assert results["manual.pdf"]["status"] == "added"
    assert results["manual.pdf"]["document"]["format"] == "pdf"
    assert results["broken.pdf"]["status"] == "failed"
    assert "PDF" in results["broken.pdf"]["reason"]
    assert [d.source for d in store.documents()] == ["manual.pdf"]


def test_same_content_under_another_name_is_reported_not_indexed_twice(app, store):
    client = signed_in(app, "content_owner")
    upload(client, md("lantern.md", LANTERN_V1))

    results = upload(client, md("lantern-copy.md", LANTERN_V1), md("lantern.md", LANTERN_V1))

    copy = results["lantern-copy.md"]
    assert copy["status"] == "duplicate"
    assert copy["reason"] == "same content as 'lantern.md', already indexed"
    assert copy["document"]["source"] == "lantern.md"
    assert results["lantern.md"]["status"] == "unchanged"
    assert [d.source for d in store.documents()] == ["lantern.md"]
    assert consistent(store)


def test_replacing_with_another_documents_content_changes_nothing(app, store):
    client = signed_in(app, "content_owner")
    results = upload(client, md("lantern.md", LANTERN_V1), md("solar.md", LANTERN_V2))
    lantern = results["lantern.md"]["document"]

    response = client.put(
        f"/api/v1/documents/{lantern['id']}", files={"file": ("x.md", LANTERN_V2)}
    )

    assert response.status_code == 409
    assert response.json()["status"] == "duplicate"
    assert response.json()["document"]["source"] == "solar.md"
    assert "magnetic" in store.document_chunks("lantern.md")[0].text


def test_a_replacement_must_keep_the_file_type(app, store):
    client = signed_in(app, "content_owner")
    lantern = upload(client, md("lantern.md", LANTERN_V1))["lantern.md"]["document"]

    response = client.put(
        f"/api/v1/documents/{lantern['id']}",
        files={"file": ("lantern.txt", LANTERN_V2, "text/plain")},
    )

    assert response.status_code == 400
    assert response.json()["reason"] == (
        "a new version of 'lantern.md' must be a .markdown or .md file too"
    )
    assert "magnetic" in store.document_chunks("lantern.md")[0].text


def test_unknown_ids_are_404(app):
    client = signed_in(app, "content_owner")
    file = {"file": ("a.md", LANTERN_V1)}

    assert client.get("/api/v1/documents/nope").status_code == 404
    assert client.put("/api/v1/documents/nope", files=file).status_code == 404
    assert client.delete("/api/v1/documents/nope").json()["error"]["code"] == "unknown_document"
    assert client.get("/staff/documents/nope").status_code == 404


def test_a_request_without_files_is_a_400(app):
    client = signed_in(app, "content_owner")

    as_json = client.post("/api/v1/documents", json={"files": []})
    wrong_field = client.post("/api/v1/documents", files={"file": ("a.md", LANTERN_V1)})

    assert as_json.status_code == 400
    assert "multipart/form-data" in as_json.json()["error"]["message"]
    assert wrong_field.status_code == 400
    assert "field 'files'" in wrong_field.json()["error"]["message"]


def test_full_paths_keep_their_last_part_and_files_past_the_limit_are_refused(
    make_app, settings, store
):
    two = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"max_files_per_upload": 2})}
    )
    app, _ = make_app(two)
    client = signed_in(app, "content_owner")

    response = client.post(
        "/api/v1/documents",
        files=[
            md("../../etc/lantern.md", LANTERN_V1),
            md("C:\\Users\\ana\\solar.md", LANTERN_V2),
            md("third.md", b"# Third\n\nOne file too many.\n"),
        ],
    )

    results = response.json()["results"]
    assert [(r["file"], r["status"]) for r in results] == [
        ("lantern.md", "added"),
        ("solar.md", "added"),
        ("third.md", "failed"),
    ]
    assert results[2]["reason"] == "over the limit of 2 files per upload"
    assert [d.source for d in store.documents()] == ["lantern.md", "solar.md"]


def test_files_sent_with_folders_keep_them_as_chatbot_ingest_names_them(
    app, service, store, tmp_path
):
    owner = signed_in(app, "content_owner")
    billing = b"# FAQ\n\nInvoices are emailed on the first day of each month.\n"
    setup = b"# FAQ\n\nThe lantern pairs when you hold its button for three seconds.\n"

    results = upload(owner, md("billing/faq.md", billing), md("setup\\faq.md", setup))

    assert {name: r["status"] for name, r in results.items()} == {
        "billing/faq.md": "added",
        "setup/faq.md": "added",
    }
    assert sorted(d.source for d in store.documents()) == ["billing/faq.md", "setup/faq.md"]
    assert retrieved(service, "when are invoices emailed")[0].source == "billing/faq.md"
    assert retrieved(service, "how do i pair the lantern")[0].source == "setup/faq.md"

    # The same names as the command line gives that folder's files: an ingest of it now
    # finds them unchanged, and a new version sent again replaces only its own document.
    for folder, body in (("billing", billing), ("setup", setup)):
        (tmp_path / "help" / folder).mkdir(parents=True)
        (tmp_path / "help" / folder / "faq.md").write_bytes(body)
    report = ingest_paths(store, [tmp_path / "help"])
    assert sorted(report.unchanged) == ["billing/faq.md", "setup/faq.md"]
    newer = billing.replace(b"first day", b"last day")
    assert upload(owner, md("billing/faq.md", newer))["billing/faq.md"]["status"] == "updated"
    assert "last day" in store.document_chunks("billing/faq.md")[0].text
    assert "three seconds" in store.document_chunks("setup/faq.md")[0].text


def test_two_files_of_one_name_in_one_upload_the_second_is_refused(app, store):
    owner = signed_in(app, "content_owner")

    response = owner.post(
        "/api/v1/documents",
        files=[md("billing/faq.md", LANTERN_V1), md("./billing//faq.md", LANTERN_V2)],
    )

    results = response.json()["results"]
    assert [(r["file"], r["status"], r["reason"]) for r in results] == [
        ("billing/faq.md", "added", None),
        ("billing/faq.md", "failed", "another file in this upload has the same name"),
    ]
    assert [d.source for d in store.documents()] == ["billing/faq.md"]


def test_a_request_larger_than_any_upload_is_refused_before_it_is_read(make_app, settings):
    small = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"max_file_bytes": 10})}
    )
    app, _ = make_app(small)
    client = signed_in(app, "content_owner")
    max_files = small.retrieval.max_files_per_upload
    body = b"x" * (max_files * 10 + documents.MULTIPART_OVERHEAD_BYTES + 1)

    response = client.post("/api/v1/documents", files=[md("big.md", body)])

    assert response.status_code == 413
    assert "at most 50 files of at most 10 bytes each" in response.json()["error"]["message"]


def test_an_upload_whose_sender_goes_away_is_logged_as_such_and_indexes_nothing(app, store, caplog):
    import asyncio

    _, token = app.state.users.create_token("content_owner", "uploads", actor="test")
    part = (
        b'--XB\r\nContent-Disposition: form-data; name="files"; filename="cut.md"\r\n\r\n'
        b"# Cut off\n\nThe lantern glows"
    )
    arriving = [{"type": "http.request", "body": part, "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        # The tab was closed: the rest of the body never comes.
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/documents",
        "raw_path": b"/api/v1/documents",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"multipart/form-data; boundary=XB"),
            (b"content-length", b"9999"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    before = store.chunk_count()

    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("went away before its request was complete" in r.message for r in caplog.records)
    assert store.chunk_count() == before and consistent(store)


def test_an_over_size_file_is_dropped_while_it_streams(tmp_path):
    boundary = b"b0undary"
    parts = [(b"big.md", b"# Big\n\n" + b"y" * 5000), (b"ok.md", b"# Ok\n\nSmall.\n")]
    body = (
        b"".join(
            b'--%s\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\n'
            b"Content-Type: text/markdown\r\n\r\n%s\r\n" % (boundary, name, data)
            for name, data in parts
        )
        + b"--%s--\r\n" % boundary
    )
    receiver = _FileParts(tmp_path, "files", max_files=5, max_file_bytes=1000)
    parser = MultipartParser(boundary, receiver.callbacks())
    biggest_on_disk = 0

    for start in range(0, len(body), 256):
        parser.write(body[start : start + 256])
        sizes = [f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()]
        biggest_on_disk = max([biggest_on_disk, *sizes])
    parser.finalize()

    big, ok = receiver.files
    assert big.path is None and big.refusal == "the file is 5,007 bytes, over the limit of 1,000"
    assert ok.path.name == "ok.md" and ok.path.is_relative_to(tmp_path)
    assert ok.path.read_bytes() == parts[1][1]
    assert biggest_on_disk <= 1000
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ok.md"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("guide.md", "guide.md"),
        ("../../guide.md", "guide.md"),
        ("C:\\docs\\guide.md", "guide.md"),
        (" guide\x00.md ", "guide.md"),
        (".hidden.md", None),
        ("folder/", "folder"),
        ("", None),
        ("a" * 300 + ".md", None),
        ("cafe\u0301.md", "caf\u00e9.md"),  # as macOS sends it, and as typed elsewhere
        ("billing/faq.md", "billing/faq.md"),
        ("billing\\faq.md", "billing/faq.md"),
        ("./billing//faq.md", "billing/faq.md"),
        (" billing / faq.md ", "billing/faq.md"),
        ("/home/ann/faq.md", "faq.md"),
        ("a/../b.md", "b.md"),
        ("docs/.git/faq.md", None),
        ("/".join(["folder"] * 40) + "/faq.md", None),
    ],
)
def test_upload_names(sent, stored):
    assert upload_name(sent) == stored


# ----- audit log and uploader
def test_changes_are_audited_and_the_uploader_is_the_last_to_change_it(app):
    owner = signed_in(app, "content_owner")
    admin = signed_in(app, "admin")
    lantern = upload(owner, md("lantern.md", LANTERN_V1))["lantern.md"]["document"]
    upload(admin, md("lantern.md", LANTERN_V2))

    [listed] = owner.get("/api/v1/documents").json()
    assert listed["uploader"] == "admin"
    owner.delete(f"/api/v1/documents/{lantern['id']}")

    entries = [
        (e.actor, e.action, e.target, e.detail)
        for e in app.state.users.audit_log()
        if e.action.startswith("document.")
    ]
    assert [e[:3] for e in entries] == [
        ("content_owner", "document.delete", "lantern.md"),
        ("admin", "document.replace", "lantern.md"),
        ("content_owner", "document.add", "lantern.md"),
    ]
    assert entries[0][3] == {
        "collection": "knowledge",
        "chunks": listed["chunk_count"],
        "size": listed["size_bytes"],
    }


# ----- a site's own knowledge collection
@pytest.fixture
def two_collections(make_app, settings):
    """The app with a second site that answers from its own collection, 'acme'."""
    acme = SiteSettings(
        key="acme-site-key", name="ACME", allowed_origins=["self"], collection="acme"
    )
    web, service = make_app(settings.model_copy(update={"sites": [*settings.sites, acme]}))
    return web, service


def test_a_sites_collection_is_managed_apart_from_the_default_one(two_collections, store):
    web, service = two_collections
    owner = signed_in(web, "content_owner")
    admin = signed_in(web, "admin")
    upload(owner, md("lantern.md", LANTERN_V1))
    response = admin.post("/api/v1/documents?collection=acme", files=[md("lantern.md", LANTERN_V2)])
    assert response.status_code == 200, response.text
    [acme_result] = response.json()["results"]
    assert acme_result["status"] == "added"  # same name, other collection: not a replacement

    default_list = owner.get("/api/v1/documents").json()
    acme_list = owner.get("/api/v1/documents", params={"collection": "acme"}).json()
    assert [(d["source"], d["uploader"]) for d in default_list] == [("lantern.md", "content_owner")]
    assert [(d["source"], d["uploader"]) for d in acme_list] == [("lantern.md", "admin")]

    # Each collection's retrieval sees its own version only.
    acme_hits = service.retriever_for("acme").store.document_chunks("lantern.md")
    assert "solar panel" in acme_hits[0].text
    assert "magnetic USB-C cable" in store.document_chunks("lantern.md")[0].text
    acme_id = acme_list[0]["id"]
    assert "solar panel" in owner.get(f"/api/v1/documents/{acme_id}?collection=acme").text

    # The page names the collection, offers the others, and keeps it in every link and form.
    page = owner.get("/staff/documents", params={"collection": "acme"})
    assert page.status_code == 200
    assert 'aria-current="page" class="chip">acme</a>' in page.text
    assert 'href="/staff/documents"' in page.text  # the default collection
    assert '>acme</a> <span class="muted">(ACME)</span>' in page.text  # who answers from it
    assert f'href="/staff/documents/{acme_id}?collection=acme"' in page.text
    assert 'data-api="/api/v1/documents?collection=acme"' in page.text
    preview = owner.get(f"/staff/documents/{acme_id}", params={"collection": "acme"})
    assert "solar panel" in preview.text and "<th>Collection</th><td>acme</td>" in preview.text
    assert f'action="/staff/documents/{acme_id}/delete?collection=acme"' in preview.text

    deleted = owner.post(
        f"/staff/documents/{acme_id}/delete?collection=acme", follow_redirects=False
    )
    assert deleted.status_code == 303
    location = deleted.headers["location"]
    assert location.startswith("/staff/documents?collection=acme&done=")
    notice = owner.get(location)
    assert "Deleted lantern.md." in notice.text
    assert "Deleted lantern.md." not in owner.get(location).text, "a reload repeats nothing"
    assert owner.get("/api/v1/documents?collection=acme").json() == []
    assert [d["source"] for d in owner.get("/api/v1/documents").json()] == ["lantern.md"]

    [entry] = [e for e in web.state.users.audit_log() if e.action == "document.delete"]
    assert entry.detail["collection"] == "acme"


def test_an_unknown_collection_is_a_404_naming_the_known_ones(two_collections):
    web, service = two_collections
    owner = signed_in(web, "content_owner")

    api = owner.get("/api/v1/documents", params={"collection": "acmee"})
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "unknown_collection"
    assert "'acmee'" in api.json()["error"]["message"]
    assert "knowledge, acme" in api.json()["error"]["message"]
    upload = owner.post("/api/v1/documents?collection=acmee", files=[md("a.md", LANTERN_V1)])
    assert upload.status_code == 404
    page = owner.get("/staff/documents", params={"collection": "acmee"})
    assert page.status_code == 404 and "There is no knowledge collection" in page.text
    # Nothing was made under the mistyped name.
    from knowledge.store import _CLIENTS

    client = _CLIENTS.client(service.retriever_for("acme").store._chroma_path)
    assert not [c for c in client.list_collections() if c.name.startswith("acmee")]

    # Without the role, the collection is not even looked at.
    assert TestClient(web).get("/api/v1/documents?collection=acmee").status_code == 401
    staff = signed_in(web, "staff")
    assert staff.get("/api/v1/documents?collection=acmee").status_code == 403


def test_one_collection_shows_no_collection_picker(app):
    page = signed_in(app, "content_owner").get("/staff/documents")
    assert page.status_code == 200 and 'id="collections"' not in page.text


# ----- the page
def test_the_page_uploads_lists_previews_replaces_and_deletes(app, store):
    client = signed_in(app, "content_owner")

    uploaded = client.post(
        "/staff/documents", files=[md("lantern.md", LANTERN_V1), md("empty.md", b"")]
    )
    assert uploaded.status_code == 200
    assert "lantern.md" in uploaded.text and "the file is empty" in uploaded.text
    doc_id = store.documents()[0].doc_id
    row = uploaded.text.split(f'data-document="{doc_id}"')[1].split("</tr>")[0]
    assert "Charge the Glowmate lantern" in row and "content_owner" in row

    preview = client.get(f"/staff/documents/{doc_id}")
    assert preview.status_code == 200 and "magnetic USB-C cable" in preview.text
    # The new version's file picker offers both suffixes of a Markdown file.
    assert 'accept=".markdown,.md"' in preview.text

    replaced = client.post(
        f"/staff/documents/{doc_id}/replace", files={"file": ("new.md", LANTERN_V2)}
    )
    assert replaced.status_code == 200
    assert "solar panel" in replaced.text and "magnetic" not in replaced.text

    claimed = client.get("/staff/documents?done=lantern.md")
    assert claimed.status_code == 200 and "Deleted lantern.md." not in claimed.text

    deleted = client.post(f"/staff/documents/{doc_id}/delete")
    assert deleted.status_code == 200 and "Deleted lantern.md." in deleted.text
    assert store.documents() == []
    # Deleted already (another tab, the API): back to the list, which says so.
    again = client.post(f"/staff/documents/{doc_id}/delete", follow_redirects=False)
    assert again.status_code == 303
    listed = client.get(again.headers["location"])
    assert listed.status_code == 200 and "it had been deleted already" in listed.text


def test_the_page_escapes_document_text(app):
    client = signed_in(app, "content_owner")
    evil = b"# <script>alert('title')</script>\n\nText <img src=x onerror=alert(1)> here.\n"
    [result] = upload(client, md("<em>evil.md", evil)).values()

    listing = client.get("/staff/documents").text
    preview = client.get(f"/staff/documents/{result['document']['id']}").text

    for page in (listing, preview):
        assert "<script>alert" not in page and "<em>evil" not in page
        assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in page
    assert "<img src=x" not in preview and "&lt;img src=x onerror=alert(1)&gt;" in preview


def test_the_page_script_is_served_and_uses_no_inner_html(app):
    script = TestClient(app).get("/static/documents.js")

    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "upload.onprogress" in script.text
    assert "innerHTML" not in script.text


def test_the_api_is_documented(app):
    schema = TestClient(app).get("/api/v1/openapi.json").json()
    paths = schema["paths"]

    collection, item = paths["/api/v1/documents"], paths["/api/v1/documents/{doc_id}"]
    assert {"get", "post"} <= set(collection) and {"get", "put", "delete"} <= set(item)
    for operation in [collection["get"], collection["post"], *item.values()]:
        assert operation["tags"] == ["documents"]
    form = collection["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["files"]["items"]["format"] == "binary"
    assert "FileResult" in schema["components"]["schemas"]
    assert "DocumentDetail" in schema["components"]["schemas"]
    assert not any(p.startswith("/staff/documents") for p in paths)
    progress = paths["/api/v1/documents/uploads/{upload_id}"]["get"]
    assert progress["tags"] == ["documents"] and "X-Upload-Id" in progress["description"]
    assert "X-Upload-Id" in collection["post"]["description"]


def test_a_document_whose_name_has_a_percent_sign_gets_a_working_source_link(app):
    import asyncio

    import httpx

    owner = signed_in(app, "content_owner")
    upload(owner, md("sale%41 codes.md", b"# Sale codes\n\nCodes expire after 14 days.\n"))

    async def fetch(path: str) -> httpx.Response:
        # Over ASGI as a server passes it: the path decoded once. (Starlette's TestClient
        # decodes it twice, which would turn "%2541" into "A".)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path)

    page = asyncio.run(fetch("/help/sale%2541%20codes.md"))

    assert page.status_code == 200 and "Codes expire after 14 days." in page.text


# ----- following an upload's indexing
def long_article(paragraphs: int, last_word: str) -> bytes:
    body = "\n\n".join(
        f"Setting {n} of the Glowmate lantern keeps its light on for {n} hours. " * 12
        for n in range(paragraphs)
    )
    return f"# Glowmate settings\n\n{body}\n\n{last_word}\n".encode()


def test_an_upload_with_an_id_is_followed_by_its_sender_while_it_is_indexed(app, store):
    from tests.chatbot.test_documents import HeldEmbedding, in_thread

    owner, admin = signed_in(app, "content_owner"), signed_in(app, "admin")
    held = HeldEmbedding(store.embeddings, "zebra")  # in the second batch of 64 texts
    store.embeddings = held
    upload_id = "3f9c2a7e-upload"
    sending, sent = in_thread(
        lambda: owner.post(
            "/api/v1/documents",
            files=[md("settings.md", long_article(90, "zebra"))],
            headers={"X-Upload-Id": upload_id},
        )
    )
    try:
        assert held.started.wait(60)
        seen = owner.get(f"/api/v1/documents/uploads/{upload_id}")
        theirs = admin.get(f"/api/v1/documents/uploads/{upload_id}")
    finally:
        held.release.set()
        sending.join(120)

    assert seen.status_code == 200, seen.text
    state = seen.json()
    assert state["file"] == "settings.md" and state["stage"] == "embedding"
    assert state["done"] == 64 and state["total"] > 64
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "unknown_upload"
    [response] = sent
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["status"] == "added" and result["document"]["chunk_count"] == state["total"]
    # A question sent just as the upload ended is answered, not "not found".
    ended = owner.get(f"/api/v1/documents/uploads/{upload_id}")
    assert ended.status_code == 200, ended.text
    assert ended.json()["stage"] == "done" and ended.json()["file"] == "settings.md"
    assert admin.get(f"/api/v1/documents/uploads/{upload_id}").status_code == 404


def test_an_ended_upload_answers_for_a_while_then_is_forgotten():
    from ui.documents import FollowedUploads

    now = [100.0]
    uploads = FollowedUploads(most=2, ended_kept_s=60, clock=lambda: now[0])
    assert uploads.start("kim", "upload-1") is True
    uploads.reporter("kim", "upload-1")("a.md", "embedding", 10, 40)
    uploads.finish("kim", "upload-1")

    now[0] += 59
    ended = uploads.get("kim", "upload-1")
    assert ended is not None and (ended.stage, ended.file, ended.done) == ("done", "a.md", 10)
    assert uploads.get("lee", "upload-1") is None
    now[0] += 2
    assert uploads.get("kim", "upload-1") is None
    # An ended upload's id can be used again, and ended ones never block a new upload.
    for n in range(5):
        assert uploads.start("kim", f"upload-{n}") is True
        uploads.finish("kim", f"upload-{n}")
    assert uploads.start("kim", "upload-4") is True
    assert uploads.get("kim", "upload-4").stage == "receiving"
    assert uploads.get("kim", "upload-0") is None  # at most ``most`` ended ones are kept


@pytest.mark.parametrize("upload_id", ["short", "has space inside", "x" * 65, "../../etc"])
def test_a_malformed_upload_id_is_refused_and_nothing_is_indexed(app, store, upload_id):
    response = signed_in(app, "content_owner").post(
        "/api/v1/documents",
        files=[md("lantern.md", LANTERN_V1)],
        headers={"X-Upload-Id": upload_id},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_upload_id"
    assert "X-Upload-Id" in response.json()["error"]["message"]
    assert store.documents() == []


def test_a_replacement_with_an_id_is_followed_too(app, store, lantern_id):
    from tests.chatbot.test_documents import HeldEmbedding, in_thread

    owner = signed_in(app, "content_owner")
    held = HeldEmbedding(store.embeddings, "solar panel")
    store.embeddings = held
    replacing, replaced = in_thread(
        lambda: owner.put(
            f"/api/v1/documents/{lantern_id}",
            files={"file": ("lantern.md", LANTERN_V2, "text/markdown")},
            headers={"X-Upload-Id": "replace-0001"},
        )
    )
    try:
        assert held.started.wait(60)
        seen = owner.get("/api/v1/documents/uploads/replace-0001")
    finally:
        held.release.set()
        replacing.join(120)

    assert seen.json() == {"file": "lantern.md", "stage": "embedding", "done": 0, "total": 1}
    assert replaced[0].json()["status"] == "updated"


def test_upload_ids_are_each_senders_own(app, store):
    from tests.chatbot.test_documents import HeldEmbedding, in_thread

    owner, admin = signed_in(app, "content_owner"), signed_in(app, "admin")
    held = HeldEmbedding(store.embeddings, "Glowmate")
    store.embeddings = held
    first, firsts = in_thread(
        lambda: owner.post(
            "/api/v1/documents",
            files=[md("lantern.md", LANTERN_V1)],
            headers={"X-Upload-Id": "same-id-1"},
        )
    )
    try:
        assert held.started.wait(60)
        again = owner.post(
            "/api/v1/documents",
            files=[md("other.md", b"# Other\n\nSomething else entirely.\n")],
            headers={"X-Upload-Id": "same-id-1"},
        )
        theirs = admin.get("/api/v1/documents/uploads/same-id-1")
        mine = owner.get("/api/v1/documents/uploads/same-id-1")
        # Another sender may use the same id meanwhile.
        admins = admin.post(
            "/api/v1/documents",
            files=[md("kettle.md", b"# Kettle\n\nHold Brew for seven seconds to descale.\n")],
            headers={"X-Upload-Id": "same-id-1"},
        )
    finally:
        held.release.set()
        first.join(120)

    assert again.status_code == 409 and again.json()["error"]["code"] == "upload_id_in_use"
    assert theirs.status_code == 404
    assert mine.status_code == 200 and mine.json()["file"] == "lantern.md"
    assert admins.status_code == 200, admins.text
    assert firsts[0].status_code == 200
    indexed = sorted(d.source for d in store.documents())
    assert indexed == ["kettle.md", "lantern.md"], "the refused one is not indexed"
    # Once the upload has ended, its sender may use the id again.
    store.embeddings = held.inner
    reused = owner.post(
        "/api/v1/documents",
        files=[md("other.md", b"# Other\n\nSomething else entirely.\n")],
        headers={"X-Upload-Id": "same-id-1"},
    )
    assert reused.status_code == 200, reused.text
