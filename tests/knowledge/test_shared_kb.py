"""A few real Zulip help-center articles (with snippet includes and tab macros) ingested end to end."""

from __future__ import annotations

import pytest

from knowledge.ingest import ingest_paths
from knowledge.retriever import HybridRetriever, WeightedQuery

pytestmark = pytest.mark.slow

ARTICLES = ["pin-a-stream.md", "mute-a-stream.md", "change-the-color-of-a-stream.md"]
RAW_MACROS = ("{!", "{tab|", "{start_tabs}", "{end_tabs}", "{settings_tab|", "{relative|")


def test_zulip_articles_are_ingested_with_their_snippets(store, shared_kb):
    help_dir = shared_kb / "help"
    snippet = (help_dir / "include" / "stream-actions.md").read_text(encoding="utf-8")
    assert "Hover over a stream in the left sidebar." in snippet, "the snippet changed upstream"

    report = ingest_paths(store, [help_dir / name for name in ARTICLES])

    assert report.ok, report.failed
    assert sorted(report.added) == sorted(ARTICLES)
    chunks = store.live_chunks()
    assert store.chunk_count() == len(chunks) == sum(d.chunk_count for d in store.documents())
    for chunk in chunks:
        for raw in RAW_MACROS:
            assert raw not in chunk.text, (chunk.source, chunk.text)
    with_snippet = {c.source for c in chunks if "Hover over a stream in the left sidebar" in c.text}
    assert with_snippet == set(ARTICLES)
    pin_chunks = [c.text for c in chunks if c.source == "pin-a-stream.md"]
    assert any("**Desktop and web app:**" in text for text in pin_chunks)
    assert all("Browse and subscribe to streams" not in text for text in pin_chunks)

    hits = HybridRetriever(store).retrieve(
        [WeightedQuery("how do I keep a stream at the top of the left sidebar?")], k=3
    )
    assert hits[0].source == "pin-a-stream.md"
    assert any("Hover over a stream" in c.text for c in hits[0].chunks)
