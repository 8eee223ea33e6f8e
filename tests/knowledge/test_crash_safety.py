"""Crash safety: an ingest killed with SIGKILL mid-document leaves the previous version live and,
once the store is opened again, no orphan chunks.

The ingest runs in a real subprocess on a real data directory. It signals through a marker file
when it has reached the point to be killed at, and stays there (or keeps working) until it is.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knowledge.store import KnowledgeStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Loading torch, Chroma and the embedder in the child takes a few seconds on a busy machine.
MARKER_TIMEOUT_S = 180

# argv: data dir, marker file, stage ("embedding" or "manifest"), new file, [previous file]
INGEST_SCRIPT = """
import sys, time
from pathlib import Path

from langchain_core.embeddings import Embeddings

from knowledge.embeddings import make_embeddings
from knowledge.ingest import ingest_paths
from knowledge.store import KnowledgeStore

data_dir, marker, stage, new = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
previous = Path(sys.argv[5]) if len(sys.argv) > 5 else None
armed = False


class SignallingEmbeddings(Embeddings):
    def __init__(self, inner):
        self.inner = inner

    def embed_documents(self, texts):
        if armed and stage == "embedding":
            marker.write_text("embedding")
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


class StallingStore(KnowledgeStore):
    # Called inside the manifest transaction that makes a version live, before its commit:
    # every chunk of the new version is in Chroma by then.
    def _bump_generation(self, db):
        super()._bump_generation(db)
        if armed and stage == "manifest":
            marker.write_text("manifest")
            time.sleep(600)


store = StallingStore(data_dir, SignallingEmbeddings(make_embeddings()))
if previous is not None:
    report = ingest_paths(store, [previous])
    assert report.ok and report.added, report
armed = True
ingest_paths(store, [new])
marker.write_text("done")
"""

GUIDE_V1 = """\
# Lantern guide

## Charging

The Glowmate lantern charges over its magnetic USB-C cable in three hours.
"""


def guide_v2(sections: int) -> str:
    body = "\n\n".join(
        f"## Part {n}\n\nThe Glowmate lantern now charges from its solar panel, step {n}: "
        + " ".join(f"leave the panel facing the sun, note {n}.{m}." for m in range(14))
        for n in range(sections)
    )
    return f"# Lantern guide\n\n{body}\n"


def kill_at(stage: str, data_dir: Path, new: Path, previous: Path | None, tmp: Path) -> None:
    """Run the ingest in a child process and SIGKILL it once it reports ``stage``."""
    marker = tmp / f"marker-{stage}"
    log = tmp / f"ingest-{stage}.log"
    args = [str(data_dir), str(marker), stage, str(new), *([str(previous)] if previous else [])]
    with log.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", INGEST_SCRIPT, *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            if child.poll() is not None:
                pytest.fail(f"the ingest ended before {stage}:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        assert marker.exists(), f"no {stage} marker within {MARKER_TIMEOUT_S} s"
        assert child.poll() is None, "the ingest ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert marker.read_text() == stage, "the ingest finished before it was killed"


def raw_vector_count(data_dir: Path) -> int:
    """Vectors in the chunk collection as Chroma holds them, live or not."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(data_dir / "chroma"),
        settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
    )
    return client.get_collection("knowledge", embedding_function=None).count()


def assert_consistent(store: KnowledgeStore) -> None:
    """Every vector belongs to a live version, and every live version is complete."""
    documents = store.documents()
    assert store.chunk_count() == sum(d.chunk_count for d in documents)
    assert len(store.live_chunks()) == store.chunk_count()
    for d in documents:
        assert len(store.document_chunks(d.source)) == d.chunk_count
    assert store.remove_orphans() == 0


def search_texts(store: KnowledgeStore, question: str) -> list[tuple[str, str]]:
    return [(h.source, h.text) for h in store.search(store.embeddings.embed_query(question), 10)]


@pytest.mark.parametrize(
    ("stage", "sections"),
    [
        # Killed while the new version's vectors are being computed: Chroma is untouched.
        ("embedding", 300),
        # Killed after every new chunk is in Chroma, before the manifest makes them live.
        ("manifest", 4),
    ],
)
def test_killed_replacement_leaves_the_previous_version_and_no_orphans(
    tmp_path, embeddings, stage, sections
):
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    (docs / "v1").mkdir(parents=True)
    (docs / "v2").mkdir()
    previous = docs / "v1" / "lantern.md"
    previous.write_text(GUIDE_V1)
    new = docs / "v2" / "lantern.md"
    new.write_text(guide_v2(sections))

    kill_at(stage, data_dir, new, previous, tmp_path)

    raw_before_restart = raw_vector_count(data_dir)
    store = KnowledgeStore(data_dir, embeddings)

    [record] = store.documents()
    assert record.source == "lantern.md"
    assert record.chunk_count == 1
    hits = search_texts(store, "How do I charge the Glowmate lantern?")
    assert hits and all(source == "lantern.md" for source, _ in hits)
    assert all("magnetic USB-C cable" in text and "solar" not in text for _, text in hits)
    if stage == "manifest":
        # The new version's chunks had reached Chroma: the restart removed them.
        assert raw_before_restart > record.chunk_count
    assert_consistent(store)
    assert store.generation() == 1


def test_killed_first_ingest_leaves_no_trace(tmp_path, embeddings):
    data_dir = tmp_path / "data"
    new = tmp_path / "lantern.md"
    new.write_text(guide_v2(4))

    kill_at("manifest", data_dir, new, None, tmp_path)

    assert raw_vector_count(data_dir) > 0
    store = KnowledgeStore(data_dir, embeddings)
    assert store.documents() == []
    assert store.chunk_count() == 0
    assert search_texts(store, "How do I charge the Glowmate lantern?") == []
    assert_consistent(store)
