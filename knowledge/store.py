"""The knowledge store: vectors in Chroma, and a SQLite manifest of which document versions are live.

Two Chroma collections: one holds the chunks, the other one vector per document, its title, which
helps a question find the article that is about it rather than one that mentions it.

A document version becomes visible only when its manifest row is committed, after all of its chunks
are in Chroma; the previous version's chunks are deleted afterwards. Readers filter chunks by the
manifest, so a search never sees half of a new version or a mix of two versions, and chunks left
behind by a crash are removed the next time the store is opened.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from knowledge.chunking import Chunk

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    format TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_hash ON documents(content_hash);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DocumentRecord:
    """The live version of one document."""

    doc_id: str
    source: str
    title: str
    content_hash: str
    version: str
    chunk_count: int
    size_bytes: int
    format: str
    updated_at: float


@dataclass(frozen=True)
class StoredChunk:
    """A live chunk as read back from the store, with its cosine similarity when it was searched."""

    chunk_id: str
    source: str
    title: str
    heading: str
    text: str
    similarity: float = 0.0


def doc_id_for(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]


class KnowledgeStore:
    """Chroma collection plus manifest under one data directory."""

    def __init__(self, data_dir: Path, embeddings: Embeddings, collection: str = "knowledge"):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.embeddings = embeddings
        self._client = chromadb.PersistentClient(
            path=str(self.data_dir / "chroma"),
            settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
        )
        # embedding_function=None: Chroma's default would fetch an ONNX model from the internet.
        self._collection = self._client.get_or_create_collection(
            name=collection, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        self._titles = self._client.get_or_create_collection(
            name=f"{collection}_titles", metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        # One manifest per collection, so that collections in one data directory stay apart.
        self.collection = collection
        manifest = "knowledge" if collection == "knowledge" else f"knowledge-{collection}"
        self._db_path = self.data_dir / f"{manifest}.sqlite3"
        self._lock_path = self.data_dir / "knowledge.lock"
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)
        self.remove_orphans()

    @contextmanager
    def _writing(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive write access across threads and processes; yields False if busy and not waiting."""
        with self._lock, self._lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # ----- manifest
    def documents(self) -> list[DocumentRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT doc_id, source, title, content_hash, version, chunk_count, size_bytes,"
                " format, updated_at FROM documents ORDER BY source"
            ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def get_document(self, source: str) -> DocumentRecord | None:
        return next((d for d in self._select("source = ?", source)), None)

    def get_document_by_id(self, doc_id: str) -> DocumentRecord | None:
        return next((d for d in self._select("doc_id = ?", doc_id)), None)

    def find_by_hash(self, content_hash: str) -> DocumentRecord | None:
        return next((d for d in self._select("content_hash = ?", content_hash)), None)

    def _select(self, where: str, value: str) -> list[DocumentRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT doc_id, source, title, content_hash, version, chunk_count, size_bytes,"
                f" format, updated_at FROM documents WHERE {where}",
                (value,),
            ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def live_versions(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT doc_id, version FROM documents").fetchall())

    def generation(self) -> int:
        """A counter that changes whenever the set of live chunks changes (in any process)."""
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') ON CONFLICT(key)"
            " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    # ----- writes
    def put_document(
        self,
        *,
        source: str,
        title: str,
        chunks: list[Chunk],
        content_hash: str,
        size_bytes: int,
        fmt: str,
    ) -> DocumentRecord:
        """Index a new version of ``source`` and make it live in one step."""
        doc_id = doc_id_for(source)
        version = content_hash[:16]
        ids = [f"{doc_id}:{version}:{c.index}" for c in chunks]
        vectors = self.embeddings.embed_documents(
            [c.embedding_text(title) for c in chunks] + [title]
        )
        title_vector = vectors.pop()
        metadatas = [
            {
                "doc_id": doc_id,
                "version": version,
                "source": source,
                "title": title,
                "heading": c.heading,
                "chunk": c.index,
            }
            for c in chunks
        ]
        doc_meta = {"doc_id": doc_id, "version": version, "source": source, "title": title}
        with self._writing():
            self._titles.upsert(
                ids=[f"{doc_id}:{version}:title"],
                embeddings=[title_vector],
                documents=[title],
                metadatas=[doc_meta],
            )
            batch = max(1, self._client.get_max_batch_size())
            for start in range(0, len(ids), batch):
                end = start + batch
                self._collection.upsert(
                    ids=ids[start:end],
                    embeddings=vectors[start:end],
                    documents=[c.text for c in chunks[start:end]],
                    metadatas=metadatas[start:end],
                )
            record = DocumentRecord(
                doc_id,
                source,
                title,
                content_hash,
                version,
                len(chunks),
                size_bytes,
                fmt,
                time.time(),
            )
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.doc_id,
                        record.source,
                        record.title,
                        record.content_hash,
                        record.version,
                        record.chunk_count,
                        record.size_bytes,
                        record.format,
                        record.updated_at,
                    ),
                )
                self._bump_generation(db)
            older = {"$and": [{"doc_id": doc_id}, {"version": {"$ne": version}}]}
            self._collection.delete(where=older)
            self._titles.delete(where=older)
        return record

    def delete_document(self, source: str) -> bool:
        """Take ``source`` out of retrieval at once, then delete its chunks."""
        doc_id = doc_id_for(source)
        with self._writing():
            with self._db() as db:
                deleted = db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount
                if deleted:
                    self._bump_generation(db)
            self._collection.delete(where={"doc_id": doc_id})
            self._titles.delete(where={"doc_id": doc_id})
        return bool(deleted)

    def remove_orphans(self) -> int:
        """Delete vectors that belong to no live version (left by a crash mid-ingest).

        Skipped while another process is writing: its new version is not live yet.
        """
        removed = 0
        with self._writing(wait=False) as acquired:
            if not acquired:
                return 0
            live = self.live_versions()
            for collection in (self._collection, self._titles):
                stored = collection.get(include=["metadatas"])
                orphans = [
                    item_id
                    for item_id, meta in zip(stored["ids"], stored["metadatas"] or [], strict=False)
                    if not _is_live(live, meta)
                ]
                if orphans:
                    collection.delete(ids=orphans)
                    removed += len(orphans)
        if removed:
            log.info("removed %d orphan vectors", removed)
        return removed

    # ----- reads
    def live_chunks(self) -> list[StoredChunk]:
        return _chunks(*self._live_rows(embeddings=False))

    def live_vectors(self) -> tuple[list[StoredChunk], np.ndarray]:
        """The live chunks and their embeddings (one row each, in the same order), in one read."""
        stored, keep = self._live_rows(embeddings=True)
        if not keep:
            return [], np.zeros((0, 0), dtype=np.float32)
        return _chunks(stored, keep), np.asarray(stored["embeddings"], dtype=np.float32)[keep]

    def _live_rows(self, embeddings: bool) -> tuple[dict, list[int]]:
        """One read of the chunk collection, and the positions of its live rows."""
        live = self.live_versions()
        include = ["documents", "metadatas", *(["embeddings"] if embeddings else [])]
        stored = self._collection.get(include=include)
        metas = stored["metadatas"] or []
        return stored, [i for i, meta in enumerate(metas) if _is_live(live, meta)]

    def document_chunks(self, source: str) -> list[StoredChunk]:
        """The live chunks of one document, in document order (a document preview)."""
        record = self.get_document(source)
        if record is None:
            return []
        stored = self._collection.get(
            where={"$and": [{"doc_id": record.doc_id}, {"version": record.version}]},
            include=["documents", "metadatas"],
        )
        rows = sorted(
            zip(stored["ids"], stored["documents"] or [], stored["metadatas"] or [], strict=False),
            key=lambda row: int(row[2].get("chunk", 0)),
        )
        return [_stored_chunk(chunk_id, text, meta) for chunk_id, text, meta in rows]

    def chunk_count(self) -> int:
        return self._collection.count()

    def search(self, vector: list[float], n: int) -> list[StoredChunk]:
        """Nearest live chunks to ``vector``, best first, with cosine similarity."""
        total = self._collection.count()
        if total == 0:
            return []
        live = self.live_versions()
        result = self._collection.query(
            query_embeddings=[vector],
            n_results=min(n, total),
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for chunk_id, text, meta, distance in zip(
            result["ids"][0],
            (result["documents"] or [[]])[0],
            (result["metadatas"] or [[]])[0],
            (result["distances"] or [[]])[0],
            strict=False,
        ):
            if _is_live(live, meta):
                # float32 rounding makes the distance of an identical text slightly negative.
                similarity = min(1.0, 1.0 - float(distance))
                hits.append(_stored_chunk(chunk_id, text, meta, similarity))
        return hits

    def search_titles(self, vector: list[float], n: int) -> dict[str, float]:
        """Cosine similarity of ``vector`` to the titles of the nearest live documents, by source."""
        total = self._titles.count()
        if total == 0:
            return {}
        live = self.live_versions()
        result = self._titles.query(
            query_embeddings=[vector], n_results=min(n, total), include=["metadatas", "distances"]
        )
        return {
            str(meta["source"]): 1.0 - float(distance)
            for meta, distance in zip(
                (result["metadatas"] or [[]])[0], (result["distances"] or [[]])[0], strict=False
            )
            if _is_live(live, meta)
        }


def _is_live(live: dict[str, str], meta) -> bool:
    """Whether a stored row belongs to its document's live version."""
    return live.get(str(meta.get("doc_id"))) == meta.get("version")


def _chunks(stored: dict, rows: list[int]) -> list[StoredChunk]:
    texts = stored["documents"] or []
    return [_stored_chunk(stored["ids"][i], texts[i], stored["metadatas"][i]) for i in rows]


def _stored_chunk(chunk_id: str, text: str | None, meta, similarity: float = 0.0) -> StoredChunk:
    return StoredChunk(
        chunk_id=chunk_id,
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        heading=str(meta.get("heading", "")),
        text=text or "",
        similarity=similarity,
    )
