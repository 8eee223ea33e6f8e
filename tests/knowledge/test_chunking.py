"""Chunking: heading-aware chunks, navigation sections dropped, link-list pages recognised."""

from __future__ import annotations

from knowledge.chunking import chunk_document, is_navigation_page, sections, whole_code_blocks
from knowledge.fences import DOCUMENT_FENCE_LINE_RE, CodeFences
from knowledge.loaders import LoadedDocument, load_document
from tests.conftest import SAMPLE_HELP


def _doc(text: str, title: str = "Pair a bulb") -> LoadedDocument:
    return LoadedDocument(source="pair.md", title=title, text=text, format="markdown")


ARTICLE = """\
# Pair a bulb

Bulbs join the hub in about a minute.

## Before you start

Make sure the hub light is solid white.

### Older bulbs

Reset a bulb from another home by switching it off and on 5 times.

## Related articles

* Troubleshoot offline bulbs
* Supported devices
"""


def test_chunks_keep_their_heading_names():
    chunks = chunk_document(_doc(ARTICLE))

    by_text = {c.text: c.heading for c in chunks}
    assert by_text == {
        "Bulbs join the hub in about a minute.": "Pair a bulb",
        "Make sure the hub light is solid white.": "Before you start",
        "Reset a bulb from another home by switching it off and on 5 times.": (
            "Before you start > Older bulbs"
        ),
    }
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_embedding_text_carries_title_and_heading():
    older = next(c for c in chunk_document(_doc(ARTICLE)) if "5 times" in c.text)

    assert older.embedding_text("Pair a bulb").splitlines() == [
        "Pair a bulb > Before you start > Older bulbs",
        "Reset a bulb from another home by switching it off and on 5 times.",
    ]


def test_related_articles_section_is_dropped():
    chunks = chunk_document(_doc(ARTICLE))

    assert chunks, "the article itself must still be chunked"
    for chunk in chunks:
        assert "Troubleshoot offline bulbs" not in chunk.text
        assert "Related articles" not in chunk.heading


def test_navigation_headings_are_matched_case_insensitively():
    text = "# Scenes\n\nScenes set many lights at once.\n\n## See Also\n\n* Schedules\n"

    chunks = chunk_document(_doc(text, title="Scenes"))

    assert [c.text for c in chunks] == ["Scenes set many lights at once."]


def test_long_section_is_split_within_the_chunk_size():
    sentences = " ".join(f"Step {n} tells you to wait a little longer." for n in range(60))
    text = f"# Firmware\n\n## Update the hub\n\n{sentences}\n"

    chunks = chunk_document(_doc(text, title="Firmware"), chunk_size=300, overlap=50)

    assert len(chunks) > 3
    assert all(len(c.text) <= 300 for c in chunks)
    assert {c.heading for c in chunks} == {"Update the hub"}
    assert "Step 0 " in chunks[0].text and "Step 59 " in chunks[-1].text


def test_a_chunk_cut_between_sentences_starts_with_the_next_sentence():
    # One long paragraph: no newline to cut at, so the cuts fall after periods.
    sentences = " ".join(f"Step {n} tells you to wait a little longer." for n in range(60))

    chunks = chunk_document(_doc(sentences, title="Firmware"), chunk_size=300, overlap=50)

    assert len(chunks) > 3
    assert all(c.text.startswith("Step ") for c in chunks), [c.text[:12] for c in chunks]
    assert all(c.text.endswith("longer.") for c in chunks), [c.text[-12:] for c in chunks]


def test_a_line_that_starts_with_a_period_keeps_it():
    lines = "\n".join(["Activate the environment first:", ". venv/bin/activate"] * 40)

    chunks = chunk_document(_doc(lines, title="Setup"), chunk_size=200, overlap=0)

    assert len(chunks) > 3
    # Cut at line ends only: every line is whole, the command with its leading period.
    lines_seen = {line for c in chunks for line in c.text.splitlines()}
    assert lines_seen == {"Activate the environment first:", ". venv/bin/activate"}


def test_a_code_block_cut_between_chunks_is_whole_in_each():
    steps = "\n".join(f"hubctl pair --slot {n} --room kitchen" for n in range(30))
    text = f"Run these commands:\n\n```bash\n{steps}\n```\n\nThe bulbs then blink twice."

    chunks = chunk_document(_doc(text, title="Pair"), chunk_size=300, overlap=60)

    with_code = [c for c in chunks if "hubctl" in c.text]
    assert len(with_code) >= 4
    for chunk in with_code:
        # Every command is inside a block that the chunk opens (with its language) and closes.
        lines = chunk.text.splitlines()
        fences = CodeFences(DOCUMENT_FENCE_LINE_RE)
        for line in lines:
            opened = fences.feed(line) and fences.open
            assert not opened or line == "```bash", chunk.text
            assert not line.startswith("hubctl") or fences.open, chunk.text
        assert not fences.open, chunk.text
    # The text after the block is text, not code, and every command is still there, in order.
    after = next(c for c in chunks if "blink twice" in c.text).text.splitlines()
    assert after[-1] == "The bulbs then blink twice." and "```bash" not in after[1:]
    seen = [ln for c in chunks for ln in c.text.splitlines() if ln.startswith("hubctl")]
    assert sorted(set(seen), key=lambda ln: int(ln.split()[3])) == steps.splitlines()


def test_a_piece_that_starts_with_the_closing_fence_opens_no_block():
    body = "```\nhubctl reset\n```\nThen wait a minute.\n~~~\nhubctl status"
    pieces = ["```\nhubctl reset", "```\nThen wait a minute.", "~~~\nhubctl status"]

    assert whole_code_blocks(body, pieces) == [
        "```\nhubctl reset\n```",
        "Then wait a minute.",
        "~~~\nhubctl status\n~~~",
    ]


def test_sections_keep_every_character_of_their_lines():
    text = (
        "# Shortcuts\r\n\r\nKey\tAction\r\nCtrl+R\tReset the hub\r\n"
        "Hold for 10\u00a0seconds; 10\u202f000 lux; \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645\x07\r\n"
        "## Config ##\n\n```yaml\nhub:\n  name: Living room\n  # not a heading\n```\n"
        "#### Deeper headings stay in the text\n\n- a list\n  - nested item\n"
        "### \n#hashtag is no heading either\f"
    )

    assert sections(text) == [
        (
            ["Shortcuts"],
            "Key\tAction\nCtrl+R\tReset the hub\n"
            "Hold for 10\u00a0seconds; 10\u202f000 lux; \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        (
            ["Shortcuts", "Config"],
            "```yaml\nhub:\n  name: Living room\n  # not a heading\n```\n"
            "#### Deeper headings stay in the text\n\n- a list\n  - nested item\n"
            "### \n#hashtag is no heading either",
        ),
    ]


def test_headings_after_a_code_block_still_cut_sections():
    text = "# Install\n\nRun:\n\n```bash\n# c\npip install x\n```\n\n## Configure\n\nEdit.\n\n# Uninstall\n\nRemove.\n"

    assert sections(text) == [
        (["Install"], "Run:\n\n```bash\n# c\npip install x\n```"),
        (["Install", "Configure"], "Edit."),
        (["Uninstall"], "Remove."),
    ]


def test_a_code_line_that_starts_a_chunk_keeps_its_indentation():
    code = "\n".join(f"    if x == {n}:\n        do_thing({n})" for n in range(40))
    text = f"```python\ndef f(x):\n{code}\n```\n"

    chunks = chunk_document(_doc(text, title="Code"), chunk_size=300, overlap=60)

    assert len(chunks) > 3
    for chunk in chunks:
        body = chunk.text.splitlines()[1:-1]  # between the fences
        assert all(ln.startswith("    ") or ln == "def f(x):" for ln in body), chunk.text


def test_a_heading_closes_the_deeper_ones_before_it():
    text = "# A\none\n## B\ntwo\n### C\nthree\n## D\nfour\n# E\nfive"

    assert sections(text) == [
        (["A"], "one"),
        (["A", "B"], "two"),
        (["A", "B", "C"], "three"),
        (["A", "D"], "four"),
        (["E"], "five"),
    ]


def test_text_without_headings_is_one_chunk():
    chunks = chunk_document(_doc("Call us on weekdays.", title="Contact"))

    assert [(c.heading, c.text) for c in chunks] == [("", "Call us on weekdays.")]


def test_link_list_page_is_a_navigation_page(tmp_path):
    links = "\n".join(f"* [Article number {n}](/help/article-{n})" for n in range(12))
    path = tmp_path / "index.md"
    path.write_text(f"# Help center\n\n## Getting started\n\n{links}\n", encoding="utf-8")

    assert is_navigation_page(load_document(path, "index.md"))


def test_articles_are_not_navigation_pages():
    for name in ("set-up-the-hub.md", "plans-and-pricing.md", "reset-the-hub.md"):
        doc = load_document(SAMPLE_HELP / name, name)
        assert not is_navigation_page(doc), name


def test_short_list_is_not_a_navigation_page():
    assert not is_navigation_page(_doc("# Colours\n\n- Red\n- Green\n- Blue\n"))
