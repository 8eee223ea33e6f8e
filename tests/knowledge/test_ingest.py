"""Ingest: folders and files into the store, with a per-file report and no needless re-embedding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge.ingest import discover, ingest_file, ingest_paths
from knowledge.loaders import LoadLimits
from tests.conftest import SAMPLE_HELP

pytestmark = pytest.mark.slow


def _consistent(store) -> bool:
    """Every chunk in Chroma belongs to a live version, and every live version is complete."""
    return store.chunk_count() == sum(d.chunk_count for d in store.documents())


def _search_sources(store, question: str) -> list[str]:
    return [h.source for h in store.search(store.embeddings.embed_query(question), 5)]


def test_discover_skips_include_and_hidden_folders(help_center):
    sources = [source for _, source, _ in discover([help_center])]

    assert sources == ["logo.png", "mute-a-channel.md", "pin-a-channel.md"]


def test_folder_ingest_adds_articles_but_not_snippets(counting_store, help_center):
    report = ingest_paths(counting_store, [help_center])

    assert sorted(report.added) == ["mute-a-channel.md", "pin-a-channel.md"]
    assert report.skipped == [("logo.png", "unsupported file type '.png'")]
    assert report.ok and not report.updated and not report.unchanged
    assert [d.source for d in counting_store.documents()] == [
        "mute-a-channel.md",
        "pin-a-channel.md",
    ]
    assert _consistent(counting_store)
    snippet_chunks = [c for c in counting_store.live_chunks() if "periwinkle" in c.text]
    assert {c.source for c in snippet_chunks} == {"mute-a-channel.md", "pin-a-channel.md"}


def test_second_ingest_of_unchanged_files_embeds_nothing(counting_store, help_center):
    ingest_paths(counting_store, [help_center])
    generation = counting_store.generation()
    counting_store.embeddings.reset()

    report = ingest_paths(counting_store, [help_center])

    assert sorted(report.unchanged) == ["mute-a-channel.md", "pin-a-channel.md"]
    assert not report.added and not report.updated and report.ok
    assert counting_store.embeddings.calls == 0
    assert counting_store.generation() == generation


def test_changed_file_alone_is_re_embedded(counting_store, help_center):
    ingest_paths(counting_store, [help_center])
    counting_store.embeddings.reset()
    article = help_center / "mute-a-channel.md"
    article.write_text(
        article.read_text() + "\n## Unmute\n\nClick **Unmute channel** in the same menu.\n"
    )

    report = ingest_paths(counting_store, [help_center])

    assert report.updated == ["mute-a-channel.md"]
    assert report.unchanged == ["pin-a-channel.md"]
    record = counting_store.get_document("mute-a-channel.md")
    assert counting_store.embeddings.calls == 1
    # One vector per chunk, plus one for the title.
    assert len(counting_store.embeddings.texts) == record.chunk_count + 1
    assert all(t.startswith("Mute a channel") for t in counting_store.embeddings.texts)
    assert _consistent(counting_store)
    live = [c.text for c in counting_store.live_chunks() if c.source == "mute-a-channel.md"]
    assert any("Unmute channel" in text for text in live)


def test_bad_files_fail_one_by_one_and_the_good_one_is_added(store, tmp_path, make_pdf):
    good = tmp_path / "warranty.md"
    good.write_text(
        "# Warranty\n\nEvery Lumora bulb is covered for two years from the date of purchase.\n"
    )
    corrupt = tmp_path / "manual.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog\n")
    empty = tmp_path / "notes.txt"
    empty.write_bytes(b"")
    big = tmp_path / "catalogue.txt"
    big.write_text("All Lumora products and prices.\n" * 200)
    program = tmp_path / "setup.exe"
    program.write_bytes(b"MZ\x90\x00")

    report = ingest_paths(
        store, [good, corrupt, empty, big, program], limits=LoadLimits(max_file_bytes=2_000)
    )

    assert report.added == ["warranty.md"]
    failures = dict(report.failed)
    assert sorted(failures) == ["catalogue.txt", "manual.pdf", "notes.txt", "setup.exe"]
    assert failures["manual.pdf"].startswith("the PDF could not be read")
    assert failures["notes.txt"] == "the file is empty"
    assert failures["catalogue.txt"] == "the file is 6,400 bytes, over the limit of 2,000"
    assert failures["setup.exe"].startswith("unsupported file type '.exe'")
    assert not report.ok
    assert [d.source for d in store.documents()] == ["warranty.md"]
    assert _consistent(store)
    assert _search_sources(store, "how long are bulbs covered?")[0] == "warranty.md"


def test_missing_path_is_reported(store, tmp_path):
    report = ingest_paths(store, [tmp_path / "nowhere.md"])

    assert report.failed == [("nowhere.md", "no such file or folder")]


def test_same_content_under_another_name_is_skipped(store, tmp_path):
    original = tmp_path / "reset-the-hub.md"
    shutil.copy(SAMPLE_HELP / "reset-the-hub.md", original)
    copy = tmp_path / "reset-copy.md"
    shutil.copy(original, copy)

    report = ingest_paths(store, [original, copy])

    assert report.added == ["reset-the-hub.md"]
    assert report.skipped == [
        ("reset-copy.md", "same content as 'reset-the-hub.md', already indexed")
    ]
    assert [d.source for d in store.documents()] == ["reset-the-hub.md"]
    assert _consistent(store)


@pytest.mark.parametrize("files", [2, 3], ids=["swapped", "rotated"])
def test_files_whose_texts_moved_round_keep_every_text(store, tmp_path, files):
    folder = tmp_path / "kb"
    folder.mkdir()
    texts = [
        "# Alpha\n\nPress the blue switch to start the kettle.\n",
        "# Beta\n\nThe lamp dims when you turn the purple dial.\n",
        "# Gamma\n\nThe fan runs quietly below twenty decibels.\n",
    ][:files]
    names = [f"{n}.md" for n in "abc"[:files]]
    for name, text in zip(names, texts, strict=True):
        (folder / name).write_text(text)
    ingest_paths(store, [folder])

    moved = texts[1:] + texts[:1]
    for name, text in zip(names, moved, strict=True):
        (folder / name).write_text(text)
    report = ingest_paths(store, [folder])

    assert report.ok and not report.skipped and not report.removed, report
    assert sorted(report.updated) == names
    titles = {d.source: d.title for d in store.documents()}
    assert titles == {
        name: text.split("\n")[0][2:] for name, text in zip(names, moved, strict=True)
    }
    assert _consistent(store)


def test_file_edited_into_a_copy_of_another_loses_its_old_version(store, tmp_path):
    original = tmp_path / "reset-the-hub.md"
    shutil.copy(SAMPLE_HELP / "reset-the-hub.md", original)
    notes = tmp_path / "hub-notes.md"
    notes.write_text("# Hub notes\n\nThe hub ships with a purple quokka sticker.\n")
    ingest_paths(store, [original, notes])

    shutil.copy(original, notes)
    report = ingest_paths(store, [original, notes])

    assert report.unchanged == ["reset-the-hub.md"]
    assert report.skipped == [
        ("hub-notes.md", "same content as 'reset-the-hub.md', already indexed")
    ]
    assert [d.source for d in store.documents()] == ["reset-the-hub.md"]
    assert all("quokka" not in c.text for c in store.live_chunks())
    assert _consistent(store)


def test_navigation_page_is_skipped(store, tmp_path):
    links = "\n".join(f"* [Topic {n}](/help/topic-{n})" for n in range(12))
    index = tmp_path / "index.md"
    index.write_text(f"# Help center\n\n{links}\n")

    report = ingest_paths(store, [index])

    assert report.skipped == [("index.md", "navigation page (only links to other pages)")]
    assert store.documents() == []


def test_progress_is_reported_per_file(store, help_center):
    seen = []

    ingest_paths(store, [help_center], progress=lambda n, total, source: seen.append((n, total)))

    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_a_link_in_the_folder_to_a_file_elsewhere_is_skipped(store, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    shutil.copy(SAMPLE_HELP / "warranty.md", folder / "warranty.md")
    outside = tmp_path / "private.md"
    outside.write_text("# Private\n\nThe admin password is hunter2.\n")
    (folder / "notes.md").symlink_to(outside)

    report = ingest_paths(store, [folder])

    assert ("notes.md", "a link to a file outside the folder") in report.skipped
    assert "notes.md" not in [d.source for d in store.documents()]
    assert all("hunter2" not in c.text for c in store.live_chunks())
    assert report.added == ["warranty.md"]


def test_what_a_folder_holds_besides_files_and_folders_is_reported_not_read(store, tmp_path):
    import os

    folder = tmp_path / "kb"
    (folder / "guides").mkdir(parents=True)
    shutil.copy(SAMPLE_HELP / "warranty.md", folder / "guides" / "warranty.md")
    (folder / "latest").symlink_to(folder / "guides")  # would list every guide twice, or loop
    (folder / "gone.md").symlink_to(tmp_path / "deleted.md")
    os.mkfifo(folder / "pipe.md")  # reading it would wait forever

    report = ingest_paths(store, [folder])

    assert report.added == ["guides/warranty.md"]
    assert sorted(report.skipped) == [
        ("gone.md", "a broken link"),
        ("latest", "a link to a folder, not followed (name that folder itself to ingest it)"),
        ("pipe.md", "not a regular file (a pipe, socket or device)"),
    ]
    # Named directly, a pipe fails with the same reason instead of blocking the ingest.
    named = ingest_paths(store, [folder / "pipe.md"])
    assert named.failed == [
        ("pipe.md", "not a regular file (a pipe, socket or device), not a document")
    ]


def _refuse(monkeypatch, refused: Path, method: str) -> None:
    """Make the file system refuse ``refused`` (tests may run as root, which reads anything)."""
    import os

    if method == "scandir":
        real = os.scandir

        def scandir(path="."):
            if Path(path) == refused:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        real_is_file = Path.is_file

        def is_file(self):
            if self == refused:
                raise PermissionError(13, "Permission denied", str(self))
            return real_is_file(self)

        monkeypatch.setattr(Path, "is_file", is_file)


@pytest.mark.parametrize(
    ("method", "entry", "reason"),
    [
        ("scandir", "guides", "the folder could not be read (Permission denied)"),
        ("is_file", "guides/warranty.md", "could not be read (Permission denied)"),
    ],
    ids=["folder", "entry"],
)
def test_what_cannot_be_looked_at_fails_and_prunes_nothing(
    store, tmp_path, monkeypatch, method, entry, reason
):
    folder = tmp_path / "kb"
    (folder / "guides").mkdir(parents=True)
    shutil.copy(SAMPLE_HELP / "reset-the-hub.md", folder / "reset-the-hub.md")
    shutil.copy(SAMPLE_HELP / "warranty.md", folder / "guides" / "warranty.md")
    assert sorted(ingest_paths(store, [folder]).added) == ["guides/warranty.md", "reset-the-hub.md"]
    _refuse(monkeypatch, folder / entry, method)

    report = ingest_paths(store, [folder], prune=True)

    assert report.failed == [(entry, reason)]
    assert report.unchanged == ["reset-the-hub.md"]
    # Unseen is not deleted: the guide stays indexed.
    assert report.removed == []
    assert "guides/warranty.md" in [d.source for d in store.documents()]


def test_a_file_the_system_refuses_to_read_fails_with_the_reason(store, tmp_path, monkeypatch):
    # Tests may run as root, which reads any file; the loader is made to meet the refusal.
    import knowledge.ingest

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(knowledge.ingest, "load_document", refused)
    path = tmp_path / "locked.md"
    path.write_text("# Locked\n")

    report = ingest_paths(store, [path])

    assert report.failed == [("locked.md", "the file could not be read (Permission denied)")]


def test_a_pdf_the_system_refuses_to_read_is_not_called_damaged(store, tmp_path, monkeypatch):
    import pypdf

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pypdf, "PdfReader", refused)
    path = tmp_path / "manual.pdf"
    path.write_bytes(b"%PDF-1.4 whatever")

    report = ingest_paths(store, [path])

    # The reason in words, without the server's path.
    assert report.failed == [("manual.pdf", "the file could not be read (Permission denied)")]


def _two_articles(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE_HELP / "reset-the-hub.md", docs / "reset-the-hub.md")
    (docs / "hub-notes.md").write_text(
        "# Hub notes\n\nThe hub ships with a purple quokka sticker.\n"
    )
    return docs


def test_prune_removes_the_documents_of_deleted_files_and_keeps_the_rest(store, tmp_path):
    docs = _two_articles(tmp_path)
    ingest_paths(store, [docs])
    (docs / "hub-notes.md").unlink()

    plain = ingest_paths(store, [docs])
    assert not plain.removed
    assert len(store.documents()) == 2

    report = ingest_paths(store, [docs], prune=True)

    assert report.removed == ["hub-notes.md"]
    assert report.unchanged == ["reset-the-hub.md"]
    assert [d.source for d in store.documents()] == ["reset-the-hub.md"]
    assert all("quokka" not in c.text for c in store.live_chunks())
    assert _consistent(store)


@pytest.mark.parametrize("change", ["renamed", "one of two copies deleted"])
def test_prune_keeps_an_article_whose_file_was_renamed(store, tmp_path, change):
    docs = _two_articles(tmp_path)
    if change == "renamed":
        ingest_paths(store, [docs])
        (docs / "hub-notes.md").rename(docs / "hub-stickers.md")
    else:
        copy = (docs / "hub-notes.md").read_text()
        (docs / "hub-stickers.md").write_text(copy)
        first = ingest_paths(store, [docs])
        assert [s for s, _ in first.skipped] == ["hub-stickers.md"], "a duplicate at first"
        (docs / "hub-notes.md").unlink()

    report = ingest_paths(store, [docs], prune=True)

    assert report.added == ["hub-stickers.md"] and report.removed == ["hub-notes.md"]
    assert sorted(d.source for d in store.documents()) == ["hub-stickers.md", "reset-the-hub.md"]
    assert any("quokka" in c.text and c.source == "hub-stickers.md" for c in store.live_chunks())
    assert _consistent(store)
    # Without --prune the old name keeps its version, and the new file repeats it.
    (docs / "hub-stickers.md").rename(docs / "hub-notes-2.md")
    plain = ingest_paths(store, [docs])
    assert [s for s, _ in plain.skipped] == ["hub-notes-2.md"] and not plain.removed


def test_prune_keeps_the_indexed_version_of_a_file_that_now_fails(store, tmp_path):
    docs = _two_articles(tmp_path)
    ingest_paths(store, [docs])
    (docs / "hub-notes.md").write_text("")

    report = ingest_paths(store, [docs], prune=True)

    assert report.failed == [("hub-notes.md", "the file is empty")]
    assert not report.removed
    assert sorted(d.source for d in store.documents()) == ["hub-notes.md", "reset-the-hub.md"]


@pytest.mark.parametrize("named", ["missing", "empty"])
def test_prune_leaves_the_store_alone_when_a_path_is_missing_or_holds_nothing(
    store, tmp_path, named
):
    docs = _two_articles(tmp_path)
    ingest_paths(store, [docs])
    other = tmp_path / "other"
    if named == "empty":
        other.mkdir()

    report = ingest_paths(store, [other] if named == "empty" else [docs, other], prune=True)

    assert not report.removed
    assert sorted(d.source for d in store.documents()) == ["hub-notes.md", "reset-the-hub.md"]


def test_two_files_with_one_document_name_keep_the_first_and_fail_the_second(store, tmp_path):
    help_docs, faq_docs = tmp_path / "help", tmp_path / "faq"
    help_docs.mkdir()
    faq_docs.mkdir()
    (help_docs / "index.md").write_text("# Help\n\nReset the hub with the pinhole button.\n")
    (faq_docs / "index.md").write_text("# FAQ\n\nThe quokka mascot has a name: Pip.\n")

    for _ in range(2):  # a second run changes nothing: no swapping back and forth
        report = ingest_paths(store, [help_docs, faq_docs])

        assert report.failed == [
            (
                "index.md",
                f"'{faq_docs / 'index.md'}' has the same document name as "
                f"'{help_docs / 'index.md'}'",
            )
        ]
        assert not report.updated
        assert [c.text for c in store.live_chunks() if "quokka" in c.text] == []
        assert any("pinhole" in c.text for c in store.live_chunks())
    assert report.unchanged == ["index.md"]


def test_a_name_written_composed_or_decomposed_is_one_document(store, tmp_path):
    composed, decomposed = "caf\u00e9-hours.md", "cafe\u0301-hours.md"
    (tmp_path / decomposed).write_text("# Café hours\n\nThe café opens at 7.\n")

    first = ingest_paths(store, [tmp_path / decomposed])
    (tmp_path / decomposed).rename(tmp_path / composed)
    second = ingest_paths(store, [tmp_path / composed])

    assert first.added == [composed]
    assert second.unchanged == [composed]
    assert [d.source for d in store.documents()] == [composed]


def test_the_same_file_named_twice_is_ingested_once(store, tmp_path):
    docs = _two_articles(tmp_path)

    report = ingest_paths(store, [docs / "hub-notes.md", docs / "hub-notes.md"])

    assert report.added == ["hub-notes.md"] and report.ok
    assert not report.unchanged and not report.failed


@pytest.mark.parametrize("edited", [False, True], ids=["same text", "edited"])
@pytest.mark.parametrize("prune", [False, True], ids=["plain", "prune"])
def test_a_document_stored_under_its_decomposed_name_is_taken_over(store, tmp_path, edited, prune):
    """A store written when names were kept as given holds "café" decomposed (as macOS lists
    it); the next ingest replaces that document instead of skipping the file as its duplicate
    or pruning it."""
    composed, decomposed = "caf\u00e9-hours.md", "cafe\u0301-hours.md"
    docs = tmp_path / "docs"
    docs.mkdir()
    article = docs / decomposed
    article.write_text("# Café hours\n\nThe café opens at 7.\n")
    (docs / "other.md").write_text("# Other\n\nThe quokka mascot is called Pip.\n")
    ingest_file(store, article, decomposed)  # as stored before
    ingest_file(store, docs / "other.md", "other.md")
    if edited:
        article.write_text("# Café hours\n\nThe café opens at 8 on Sundays.\n")

    report = ingest_paths(store, [docs], prune=prune)

    assert report.updated == [composed] and not report.skipped and not report.failed
    assert report.removed == []
    assert [d.source for d in store.documents()] == [composed, "other.md"]
    texts = [c.text for c in store.live_chunks() if "café" in c.text.lower()]
    assert texts and all(("8 on Sundays" in t) is edited for t in texts)
    assert _consistent(store)


def _long_article(paragraphs: int, last_word: str = "") -> str:
    body = "\n\n".join(
        f"Step {n}: the lantern's setting number {n} keeps its light for {n} hours. " * 12
        for n in range(paragraphs)
    )
    return f"# Lantern settings\n\n{body}\n\n{last_word}\n"


def test_an_ingest_reports_its_stages_and_the_embedding_as_it_goes(counting_store, tmp_path):
    article = tmp_path / "lantern.md"
    article.write_text(_long_article(90), encoding="utf-8")
    calls = []

    outcome = ingest_file(
        counting_store, article, "lantern.md", progress=lambda *a: calls.append(a)
    )

    assert outcome.status == "added"
    chunks = outcome.record.chunk_count
    assert chunks + 1 > 64, "the chunks and the title take more than one batch"
    assert calls[0] == ("reading", 0, 0)
    embedding = [(done, total) for stage, done, total in calls if stage == "embedding"]
    assert embedding[0] == (0, chunks) and embedding[-1] == (chunks, chunks)
    assert [done for done, _ in embedding][1:-1] == list(range(64, chunks, 64))
    assert len(embedding) == 1 + -(-(chunks + 1) // 64)  # before the first batch, after each
    assert calls[-1] == ("saving", chunks, chunks)
    assert counting_store.embeddings.calls == len(embedding) - 1

    calls.clear()
    again = ingest_file(counting_store, article, "lantern.md", progress=lambda *a: calls.append(a))
    assert again.status == "unchanged" and calls == [("reading", 0, 0)]


def test_embedding_in_batches_gives_the_same_vectors(store):
    from knowledge.chunking import Chunk

    chunks = [Chunk(n, "", f"Setting {n} keeps the lantern lit for {n} hours.") for n in range(70)]

    whole = store.embed_document("Lantern settings", chunks)
    batched = store.embed_document("Lantern settings", chunks, progress=lambda *_: None)

    assert len(batched) == len(whole) == 71
    assert np.abs(np.asarray(whole) - np.asarray(batched)).max() < 1e-5
