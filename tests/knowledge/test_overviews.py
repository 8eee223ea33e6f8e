"""Overview pages (a page listing other articles by title) give way to the article they list."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.ingest import ingest_paths
from knowledge.retriever import (
    DocumentHit,
    HybridRetriever,
    WeightedQuery,
    overviews,
    overviews_give_way,
)
from knowledge.store import StoredChunk


def chunk(source: str, title: str, text: str) -> StoredChunk:
    return StoredChunk(f"{source}:1:0", source, title, "", text)


ARTICLES = [
    chunk("tables.md", "Tables", "Write rows between pipes."),
    chunk("quotes.md", "Quotes", "Start a line with >."),
    chunk("spoilers.md", "Spoilers", "Hide text behind a click."),
    chunk("latex.md", "LaTeX", "Write maths between dollars."),
]


def test_a_page_listing_three_other_titles_is_an_overview():
    overview = chunk(
        "formatting.md",
        "Format your message",
        "Everything you can format:\n* Tables\n- quotes.\n1. Spoilers\n\nSee also LaTeX.",
    )

    found = overviews([overview, *ARTICLES])

    # Case and a closing full stop do not matter; a title inside a sentence is not a list item.
    assert found == {"formatting.md": frozenset({"tables.md", "quotes.md", "spoilers.md"})}


def test_two_listed_titles_or_a_list_of_non_titles_make_no_overview():
    short = chunk("short.md", "Short list", "* Tables\n* Quotes\n* Bananas\n* Format your message")

    assert overviews([short, *ARTICLES]) == {}


def test_a_page_listing_its_own_title_or_a_shared_title_does_not_count_them():
    twin = chunk("old-tables.md", "Tables", "The old way to write tables.")
    page = chunk(
        "formatting.md",
        "Format your message",
        "* Format your message\n* Tables\n* Quotes\n* Spoilers",
    )

    # "Tables" names two documents, so it names neither; the page's own title is not listed.
    assert overviews([page, twin, *ARTICLES]) == {}
    page_with_latex = chunk("formatting.md", "Format your message", page.text + "\n* LaTeX")
    assert overviews([page_with_latex, twin, *ARTICLES]) == {
        "formatting.md": frozenset({"quotes.md", "spoilers.md", "latex.md"})
    }


def test_the_listed_chunks_of_one_document_add_up():
    first = chunk("formatting.md", "Format your message", "* Tables\n* Quotes")
    second = StoredChunk("formatting.md:1:1", "formatting.md", "Format your message", "", "* LaTeX")

    assert overviews([first, second, *ARTICLES]) == {
        "formatting.md": frozenset({"tables.md", "quotes.md", "latex.md"})
    }


def hit(source: str, score: float) -> DocumentHit:
    return DocumentHit(source, source, score, score)


LISTED = {"formatting.md": frozenset({"tables.md", "quotes.md", "spoilers.md"})}


def order(hits: list[DocumentHit], margin: float = 0.1) -> list[str]:
    return [h.source for h in overviews_give_way(hits, LISTED, margin)]


def test_an_article_the_overview_lists_takes_its_place_when_close():
    hits = [hit("formatting.md", 0.70), hit("pins.md", 0.66), hit("tables.md", 0.62)]

    # Only the listed article moves; the one in between keeps its place.
    assert order(hits) == ["tables.md", "formatting.md", "pins.md"]


def test_several_listed_articles_within_the_margin_keep_their_order_before_it():
    hits = [
        hit("formatting.md", 0.70),
        hit("quotes.md", 0.66),
        hit("pins.md", 0.64),
        hit("tables.md", 0.62),
    ]

    assert order(hits) == ["quotes.md", "tables.md", "formatting.md", "pins.md"]


def test_a_listed_article_further_than_the_margin_stays_behind():
    hits = [hit("formatting.md", 0.80), hit("tables.md", 0.69), hit("pins.md", 0.60)]

    assert order(hits) == ["formatting.md", "tables.md", "pins.md"]
    assert order(hits, margin=0.12) == ["tables.md", "formatting.md", "pins.md"]


def test_nothing_moves_with_margin_zero_or_when_the_article_is_ahead_already():
    hits = [hit("formatting.md", 0.70), hit("tables.md", 0.69)]
    assert order(hits, margin=0) == ["formatting.md", "tables.md"]

    ahead = [hit("tables.md", 0.75), hit("formatting.md", 0.70), hit("latex.md", 0.69)]
    assert order(ahead) == ["tables.md", "formatting.md", "latex.md"]


def test_an_article_that_is_itself_an_overview_gives_way_in_turn():
    listed = {
        "index.md": frozenset({"formatting.md", "pins.md"}),
        "formatting.md": frozenset({"tables.md"}),
    }
    hits = [hit("index.md", 0.80), hit("formatting.md", 0.75), hit("tables.md", 0.70)]

    moved = overviews_give_way(hits, listed, 0.1)

    assert [h.source for h in moved] == ["tables.md", "formatting.md", "index.md"]


def test_two_overviews_listing_each_other_settle():
    listed = {"a.md": frozenset({"b.md"}), "b.md": frozenset({"a.md"})}
    hits = [hit("a.md", 0.80), hit("b.md", 0.75)]

    assert [h.source for h in overviews_give_way(hits, listed, 0.1)] == ["b.md", "a.md"]


def test_scores_are_left_as_they_are():
    hits = [hit("formatting.md", 0.70), hit("tables.md", 0.62)]

    moved = overviews_give_way(hits, LISTED, 0.1)

    assert [(h.source, h.score) for h in moved] == [("tables.md", 0.62), ("formatting.md", 0.70)]


HELP = {
    "formatting.md": "# Format your messages\n\nLumora's message box understands a few "
    "formatting marks, so your notes to your household read well. This page lists everything "
    "you can do with formatting in a message.\n\n* Bold and italic text\n* Tables\n"
    "* Checklists\n* Quotes\n\nEach of these has its own article with examples.\n",
    "tables.md": "# Tables\n\nPut a table in a message by writing its rows between pipes, one "
    "row per line, with a line of dashes under the header row:\n\n| Room | Bulb |\n| --- | --- |"
    "\n| Kitchen | Warm |\n",
    "checklists.md": "# Checklists\n\nStart a line with `- [ ]` to make a checklist item in a "
    "message; anyone can tick it off.\n",
    "quotes.md": "# Quotes\n\nStart a line with `>` to quote someone else's message in yours.\n",
    "bold-and-italic-text.md": "# Bold and italic text\n\nPut two asterisks around text to make "
    "it bold, and one for italic.\n",
    "night-mode.md": "# Night mode\n\nNight mode dims every bulb after sunset.\n",
}


@pytest.fixture
def formatting_store(store, tmp_path: Path):
    folder = tmp_path / "help"
    folder.mkdir()
    for name, text in HELP.items():
        (folder / name).write_text(text)
    assert ingest_paths(store, [folder]).ok
    return store


def _first(retriever: HybridRetriever, question: str) -> str:
    return retriever.retrieve([WeightedQuery(question)], k=5)[0].source


def test_a_real_store_finds_its_overview_and_puts_the_listed_article_first(formatting_store):
    question = "quote formatting in a message"
    plain = HybridRetriever(formatting_store, overview_margin=0)
    giving_way = HybridRetriever(formatting_store)  # the default margin, 0.1

    assert giving_way._indexes().overviews == {
        "formatting.md": frozenset(
            {"bold-and-italic-text.md", "tables.md", "checklists.md", "quotes.md"}
        )
    }
    assert plain._indexes().overviews == {}, "margin 0: not even looked for"
    assert _first(plain, question) == "formatting.md", "the overview scores highest"
    assert _first(giving_way, question) == "quotes.md"
    # The same order whatever k is: the overview gives way among the first five.
    assert [h.source for h in giving_way.retrieve([WeightedQuery(question)], k=1)] == ["quotes.md"]
    # A question about formatting in general is far closer to the overview: it stays first.
    assert _first(giving_way, "what formatting can i use in a message") == "formatting.md"
    # Further below than the margin, the listed article stays behind ...
    assert _first(giving_way, "how do i format a table in my message") == "formatting.md"
    # ... unless the margin is wider.
    wider = HybridRetriever(formatting_store, overview_margin=0.2)
    assert _first(wider, "how do i format a table in my message") == "tables.md"


def test_the_setting_reaches_the_service_retriever(settings):
    from chatbot.service import create_service

    changed = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"overview_margin": 0.25})}
    )

    assert create_service(settings, with_model=False).retriever.overview_margin == 0.1
    assert create_service(changed, with_model=False).retriever.overview_margin == 0.25
