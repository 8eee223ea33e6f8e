"""The document library without HTTP: lookups by id, per-file results, uploaders and the audit log
(real Chroma store, real embedder, real SQLite app database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbot.documents import DocumentLibrary, ReceivedFile
from chatbot.service import AnswerOptions, ChatService
from chatbot.users import UserDirectory
from knowledge.retriever import HybridRetriever

pytestmark = pytest.mark.slow

LANTERN = b"# Charge the lantern\n\nThe lantern charges over its USB-C cable in three hours.\n"
SOLAR = b"# Charge the lantern\n\nThe lantern now charges from its solar panel in one day.\n"


@pytest.fixture
def library(settings, store) -> Iterator[DocumentLibrary]:
    service = ChatService(settings, store, HybridRetriever(store), None)
    users = UserDirectory(settings.data_dir / settings.memory.database, settings.auth)
    yield DocumentLibrary(service, users)
    service.close()


def received(folder: Path, name: str, body: bytes) -> ReceivedFile:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(body)
    return ReceivedFile(name, path, len(body))


def test_a_document_is_found_by_its_id_and_previewed_with_its_uploader(library, tmp_path):
    [result] = library.add([received(tmp_path / "up", "lantern.md", LANTERN)], "ana")

    assert result.status == "added" and result.document is not None
    record = result.document.record
    assert library.find(record.doc_id) == record == library.store.get_document_by_id(record.doc_id)
    assert library.find("no-such-id") is None
    preview = library.preview(record)
    assert preview.document.uploader == "ana"
    assert "USB-C cable" in " ".join(c.text for c in preview.chunks)


def test_results_say_what_became_of_each_file(library, tmp_path):
    files = [
        received(tmp_path / "a", "lantern.md", LANTERN),
        ReceivedFile("huge.md", refusal="over the size limit"),
        received(tmp_path / "b", "copy.md", LANTERN),
    ]

    lantern, huge, copy = library.add(files, "ana")
    [again] = library.add([received(tmp_path / "c", "lantern.md", LANTERN)], "ben")

    assert (huge.status, huge.reason, huge.document) == ("failed", "over the size limit", None)
    assert copy.status == "duplicate" and copy.document == lantern.document
    assert again.status == "unchanged" and again.document.uploader == "ana"
    assert [d.record.source for d in library.documents()] == ["lantern.md"]


def test_a_replacement_keeps_the_type_and_a_deletion_is_audited(library, tmp_path):
    [added] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    doc_id = added.document.record.doc_id

    wrong = library.replace(doc_id, received(tmp_path / "b", "lantern.txt", SOLAR), "ben")
    right = library.replace(doc_id, received(tmp_path / "c", "new.md", SOLAR), "ben")
    deleted = library.delete(doc_id, "ben")

    assert wrong.status == "failed" and "must be a .markdown or .md file too" in wrong.reason
    assert right.status == "updated" and right.document.uploader == "ben"
    assert right.document.record.source == "lantern.md"
    assert deleted == right.document.record
    assert library.find(doc_id) is None and library.delete(doc_id, "ben") is None
    actions = [e.action for e in library.users.audit_log() if e.action.startswith("document.")]
    assert actions == ["document.delete", "document.replace", "document.add"]
    assert library.replace(doc_id, received(tmp_path / "d", "x.md", LANTERN), "ben") is None


def test_a_command_line_change_clears_the_uploader_and_is_audited(library, tmp_path):
    [added] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    assert added.document.uploader == "ana"
    folder = tmp_path / "cli"
    received(folder, "lantern.md", SOLAR)
    received(folder, "kettle.md", b"# Descale the kettle\n\nUse vinegar once a month.\n")

    report = library.service.ingest([folder])
    library.record_outside_changes(report.added, report.updated, "chatbot ingest")

    assert (report.added, report.updated) == (["kettle.md"], ["lantern.md"])
    uploaders = {d.record.source: d.uploader for d in library.documents()}
    assert uploaders == {"kettle.md": None, "lantern.md": None}
    entries = [(e.actor, e.action, e.target) for e in library.users.audit_log()[:2]]
    assert sorted(entries) == [
        ("chatbot ingest", "document.add", "kettle.md"),
        ("chatbot ingest", "document.replace", "lantern.md"),
    ]
    assert library.users.audit_log()[0].detail["collection"] == library.collection


def test_a_command_line_ingest_that_removes_a_document_audits_the_removal(library, tmp_path):
    folder = tmp_path / "cli"
    received(folder, "lantern.md", LANTERN)
    received(folder, "solar.md", SOLAR)
    library.service.ingest([folder])
    # solar.md now says what lantern.md says: its old text must not stay searchable.
    received(folder, "solar.md", LANTERN)

    report = library.service.ingest([folder])
    library.record_outside_changes(
        report.added, report.updated, "chatbot ingest", removed=report.removed
    )

    assert report.removed == ["solar.md"]
    assert [d.record.source for d in library.documents()] == ["lantern.md"]
    entry = library.users.audit_log()[0]
    assert (entry.actor, entry.action, entry.target) == (
        "chatbot ingest",
        "document.delete",
        "solar.md",
    )


def test_uploaders_recorded_before_collections_stay_with_the_default_collection(
    settings, store, tmp_path
):
    """An app database from before collections keyed uploaders by source alone."""
    import sqlite3

    from knowledge.ingest import ingest_file

    path = received(tmp_path / "up", "lantern.md", LANTERN).path
    assert ingest_file(store, path, "lantern.md").status == "added"
    database = settings.data_dir / settings.memory.database
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE document_uploaders (source TEXT PRIMARY KEY, uploader TEXT)")
        db.execute("INSERT INTO document_uploaders VALUES ('lantern.md', 'ana')")
    db.close()
    service = ChatService(settings, store, HybridRetriever(store), None)
    users = UserDirectory(database, settings.auth)
    try:
        library = DocumentLibrary(service, users)
        listed = [(d.record.source, d.uploader) for d in library.documents()]
        assert listed == [("lantern.md", "ana")]
        assert DocumentLibrary(service, users, "acme").documents() == []
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT collection, source, uploader FROM document_uploaders")
            assert rows.fetchall() == [("knowledge", "lantern.md", "ana")]
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        db.close()
        assert ("document_uploaders_old",) not in tables
    finally:
        service.close()


def _index_builds(caplog) -> int:
    return sum("search indexes built" in r.getMessage() for r in caplog.records)


def test_a_change_rebuilds_the_search_indexes_before_the_next_question(library, tmp_path, caplog):
    caplog.set_level("INFO", logger="knowledge.retriever")
    [added] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    assert _index_builds(caplog) == 1, "built with the upload"
    caplog.clear()
    assert library.service.retrieve("how do i charge the lantern").hits
    assert _index_builds(caplog) == 0, "the question did not wait for a build"

    doc_id = added.document.record.doc_id
    library.replace(doc_id, received(tmp_path / "b", "lantern.md", SOLAR), "ana")
    library.delete(doc_id, "ana")
    assert _index_builds(caplog) == 2
    caplog.clear()
    library.service.retrieve("how do i charge the lantern")
    assert _index_builds(caplog) == 0


def test_prepare_search_builds_every_collections_indexes(settings, store, caplog):
    from chatbot.settings import SiteSettings

    site = SiteSettings(
        key="acme-site-key", name="ACME", allowed_origins=["self"], collection="acme"
    )
    settings = settings.model_copy(update={"sites": [*settings.sites, site]})
    service = ChatService(settings, store, HybridRetriever(store), None)
    try:
        caplog.set_level("INFO", logger="knowledge.retriever")
        service.prepare_search()
        assert _index_builds(caplog) == 2  # the default collection and acme's
        caplog.clear()
        service.retrieve("anything at all")
        service.retrieve("anything at all", options=AnswerOptions(collection="acme"))
        assert _index_builds(caplog) == 0
    finally:
        service.close()


def test_a_failed_index_build_does_not_undo_or_hide_the_change(library, tmp_path, monkeypatch):
    def broken() -> None:
        raise RuntimeError("index build failed")

    monkeypatch.setattr(library.service.retriever, "refresh", broken)
    [added] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")

    assert added.status == "added"
    assert [d.record.source for d in library.documents()] == ["lantern.md"]
    monkeypatch.undo()
    hits = library.service.retrieve("how do i charge the lantern").hits
    assert hits and hits[0].source == "lantern.md", "the next question builds the indexes"


def test_a_change_by_another_process_is_indexed_in_the_background(
    settings, store, tmp_path, caplog
):
    import subprocess
    import sys

    from tests.conftest import REPO

    service = ChatService(settings, store, HybridRetriever(store), None)
    caplog.set_level("INFO", logger="knowledge.retriever")
    try:
        service.prepare_search()
        service.keep_search_ready(0.05)
        # Another process (chatbot ingest) writes through its own store on the same directory.
        path = received(tmp_path / "up", "lantern.md", LANTERN).path
        script = (
            "from pathlib import Path\nfrom knowledge.embeddings import make_embeddings\n"
            "from knowledge.ingest import ingest_file\n"
            "from knowledge.store import KnowledgeStore\n"
            f"store = KnowledgeStore({str(store.data_dir)!r}, make_embeddings(), "
            f"{store.collection!r})\n"
            f"assert ingest_file(store, Path({str(path)!r}), 'lantern.md').status == 'added'\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300)
        deadline = time.monotonic() + 30
        while _index_builds(caplog) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _index_builds(caplog) == 2, "rebuilt by the background check"
        caplog.clear()
        hits = service.retrieve("how do i charge the lantern").hits
        assert hits and hits[0].source == "lantern.md"
        assert _index_builds(caplog) == 0, "the question did not wait for a build"
    finally:
        service.close()
    import threading

    assert "search-indexes" not in {t.name for t in threading.enumerate()}, "stopped by close"


class HeldEmbedding:
    """The store's real embedder, except that embedding a text with ``word`` in it waits until
    the test lets it go (a large file being embedded)."""

    def __init__(self, inner, word: str):
        self.inner, self.word = inner, word
        self.started, self.release = threading.Event(), threading.Event()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if any(self.word in text for text in texts):
            self.started.set()
            assert self.release.wait(120), "never let go"
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def in_thread(call) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    return thread, results


CATALOGUE = b"# Lamp catalogue\n\nEvery lamp we sell, with its bulb and its battery.\n"


def test_a_delete_does_not_wait_for_an_upload_being_embedded(library, tmp_path):
    [kept] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    held = HeldEmbedding(library.store.embeddings, "catalogue")
    library.store.embeddings = held
    upload, uploaded = in_thread(
        lambda: library.add([received(tmp_path / "b", "catalogue.md", CATALOGUE)], "ben")
    )
    assert held.started.wait(60)

    delete, deleted = in_thread(lambda: library.delete(kept.document.record.doc_id, "ana"))
    delete.join(60)
    done_while_embedding = not delete.is_alive() and not held.release.is_set()
    held.release.set()
    upload.join(60)
    delete.join(60)

    assert done_while_embedding, "the delete waited for the upload's embedding"
    assert deleted[0].source == "lantern.md"
    assert [r.status for r in uploaded[0]] == ["added"]
    assert [d.record.source for d in library.documents()] == ["catalogue.md"]
    assert [d.uploader for d in library.documents()] == ["ben"]


def test_a_document_deleted_while_its_new_version_is_embedded_stays_deleted(library, tmp_path):
    [first] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    doc_id = first.document.record.doc_id
    held = HeldEmbedding(library.store.embeddings, "solar panel")
    library.store.embeddings = held
    replace, replaced = in_thread(
        lambda: library.replace(doc_id, received(tmp_path / "b", "new.md", SOLAR), "ben")
    )
    assert held.started.wait(60)

    library.delete(doc_id, "ana")
    held.release.set()
    replace.join(60)

    [result] = replaced
    assert result.status == "failed"
    assert result.reason == "the document was deleted while its new version was indexed"
    assert library.find(doc_id) is None and library.documents() == []


def test_a_replacement_may_use_the_other_suffix_of_its_kind(library, tmp_path):
    # ".markdown" is a Markdown file as ".md" is (and ".htm" an HTML file as ".html" is).
    [added] = library.add([received(tmp_path / "a", "lantern.md", LANTERN)], "ana")
    doc_id = added.document.record.doc_id

    right = library.replace(doc_id, received(tmp_path / "b", "new.MARKDOWN", SOLAR), "ben")

    assert right.status == "updated", right.reason
    assert right.document.record.source == "lantern.md"
    assert "solar panel" in " ".join(c.text for c in library.preview(right.document.record).chunks)
