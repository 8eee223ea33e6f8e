"""Loaders: every supported format read into Markdown-like text, every bad file refused with a reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from knowledge.loaders import (
    DocumentError,
    LoadLimits,
    join_broken_words,
    load_document,
    metadata_title,
    without_running_lines,
)


def test_markdown_title_includes_tabs_and_links(help_center):
    doc = load_document(help_center / "pin-a-channel.md", "pin-a-channel.md")

    assert doc.title == "Pin a channel"
    assert doc.format == "markdown"
    assert doc.source == "pin-a-channel.md"
    assert "Hover over a channel in the left sidebar." in doc.text
    assert "periwinkle channel badge" in doc.text
    assert "**Desktop and web app:**" in doc.text
    assert "**Mobile:**" in doc.text
    assert "Go to the **Notifications** tab of the settings." in doc.text
    assert "top of the channel list." in doc.text
    assert "* Mute a channel" in doc.text
    for raw in ("{!", "{tab|", "{start_tabs}", "{end_tabs}", "{settings_tab", "](", "/help/"):
        assert raw not in doc.text


def test_markdown_without_heading_takes_its_title_from_the_file_name(tmp_path):
    path = tmp_path / "reset_your-password.md"
    path.write_text("Click **Forgot password** on the sign-in page.\n", encoding="utf-8")

    assert load_document(path, path.name).title == "Reset your password"


def test_markdown_comments_and_link_definitions_are_not_indexed(tmp_path):
    page = tmp_path / "reset.md"
    page.write_text(
        "[//]: # (Screenshots need a 16px font.)\n"
        "# Reset the hub\n\n"
        "Hold the button for ten seconds.\n<!-- TODO: check the\ncount -->\n\n"
        "See [the manual][manual] for more.\n\n"
        "[manual]: https://example.com/manual.pdf\n",
        encoding="utf-8",
    )

    doc = load_document(page, "reset.md")

    assert doc.title == "Reset the hub"
    assert "Screenshots" not in doc.text and "TODO" not in doc.text
    assert "example.com" not in doc.text
    assert "Hold the button for ten seconds." in doc.text
    assert "See [the manual][manual] for more." in doc.text


def test_what_readers_see_stays_footnotes_code_and_paragraph_lines(tmp_path):
    page = tmp_path / "warranty.md"
    shown = [
        "Parts are covered for two years.[^1]",
        "[^1]: Batteries are covered for six months.",
        "[server]: hub.local",
        "<!-- not a comment inside code -->",
        "Contact us with:",
        "[Order number]: on your receipt",
        "Type `<!--` to start a comment and `-->` to end it.",
    ]
    page.write_text(
        f"# Warranty\n\n{shown[0]}\n\n{shown[1]}\n\n```ini\n{shown[2]}\n{shown[3]}\n```\n\n"
        f"{shown[4]}\n{shown[5]}\n\n{shown[6]}\n",
        encoding="utf-8",
    )

    text = load_document(page, "warranty.md").text

    for line in shown:
        assert line in text


def test_a_fence_with_an_info_string_does_not_close_a_code_block(tmp_path):
    page = tmp_path / "config.md"
    kept = ["```python", "<!-- kept: still code -->"]
    page.write_text(
        f"# Config\n\n```\n{kept[0]}\n{kept[1]}\n```\n\n"
        "<!-- hidden -->\n[manual]: https://example.com/manual.pdf\n",
        encoding="utf-8",
    )

    text = load_document(page, "config.md").text

    for line in kept:
        assert line in text
    assert "hidden" not in text and "example.com" not in text


def test_text_file_title_is_its_first_line(tmp_path):
    path = tmp_path / "returns.txt"
    path.write_text("\n\nReturns and exchanges\n\nYou can return a device within 30 days.\n")

    doc = load_document(path, "returns.txt")

    assert doc.title == "Returns and exchanges"
    assert doc.format == "text"
    assert "within 30 days" in doc.text


def test_text_file_in_latin1_is_read(tmp_path):
    path = tmp_path / "cafe.txt"
    path.write_bytes("Café opening hours\n".encode("latin-1"))

    assert load_document(path, "cafe.txt").title == "Café opening hours"


def test_windows_1252_quotes_are_read_as_such(tmp_path):
    path = tmp_path / "quotes.txt"
    # With one byte Windows-1252 leaves undefined, and a DOS end-of-file mark.
    text = "\u201cPair\u201d the hub \u2013 it\u2019s quick, \u20ac5 \u201cextra\u201d.\n"
    path.write_bytes(text.encode("cp1252") + b"\x81\n\x1a")

    loaded = load_document(path, "quotes.txt").text

    assert loaded.startswith(text) and loaded.endswith("\ufffd\n")


def test_one_stray_byte_in_utf8_text_garbles_nothing_else(tmp_path):
    path = tmp_path / "cafe.md"
    # A Latin-1 "©" pasted into a UTF-8 article.
    path.write_bytes(
        "# Café guide\n\nOpen daily; crème brûlée on Sundays.\n".encode() + b"\xa9 Lumora\n"
    )

    doc = load_document(path, "cafe.md")

    assert doc.title == "Café guide"
    assert "crème brûlée on Sundays." in doc.text and "\ufffd Lumora" in doc.text


@pytest.mark.parametrize(
    ("encoding", "meta"),
    [
        ("koi8-r", '<meta charset="koi8-r">'),
        ("shift_jis", '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'),
        ("iso-8859-2", "<META CHARSET=iso-8859-2>"),
    ],
)
def test_an_html_page_is_read_in_the_encoding_it_declares(tmp_path, encoding, meta):
    title = {"koi8-r": "Сброс хаба", "shift_jis": "ハブのリセット", "iso-8859-2": "Zażółć hub"}[
        encoding
    ]
    page = (
        f"<html><head>{meta}<title>{title}</title></head><body><p>{title}: 10 s.</p></body></html>"
    )
    path = tmp_path / "reset.html"
    path.write_bytes(page.encode(encoding))

    doc = load_document(path, "reset.html")

    assert doc.title == title and f"{title}: 10 s." in doc.text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_decoded(tmp_path, encoding):
    path = tmp_path / "pairing.md"
    data = "# Pair the hub\n\nHold the button for 5 s.\n".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)

    doc = load_document(path, "pairing.md")

    assert doc.title == "Pair the hub"
    assert "Hold the button for 5 s." in doc.text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("random.md", bytes(range(1, 256)) * 40, "does not look like text"),
        ("nul.txt", b"Pair the hub\x00\x00\x01\x02", "contains NUL bytes"),
        ("utf16-no-bom.txt", "Pair the hub".encode("utf-16-le"), "contains NUL bytes"),
        ("broken.txt", b"\xff\xfeP\x00a\x00\x00\xd8", "not valid UTF-16"),
    ],
)
def test_binary_or_undecodable_text_files_are_refused(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)

    with pytest.raises(DocumentError) as refused:
        load_document(path, name)

    assert refused.value.source == name
    assert reason in refused.value.reason


def load_html(tmp_path, page: str, name: str = "page.html"):
    """``page`` written as a UTF-8 file and loaded."""
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return load_document(path, name)


def test_html_strips_scripts_and_styles_and_keeps_headings(tmp_path):
    doc = load_html(
        tmp_path,
        "<html><head><title>Reset the hub</title><style>.x { color: red }</style>"
        "<script>var trackingSecret = 42;</script></head><body>"
        "<nav>Home | Blog</nav><h1>Factory reset</h1><p>Hold the <b>reset</b> button.</p>"
        "<h2>Before you start</h2><ul><li><p>Unplug the bulbs</p></li><li>Keep power on</li></ul>"
        "<table><tr><td><p>Reset time</p></td><td>3 minutes</td></tr></table>"
        "</body></html>",
    )

    assert doc.title == "Reset the hub"
    assert doc.format == "html"
    lines = doc.text.splitlines()
    assert "# Factory reset" in lines
    assert "## Before you start" in lines
    assert "Hold the reset button." in lines
    assert "- Keep power on" in lines
    assert "3 minutes" in lines
    for noise in ("trackingSecret", "color: red", "Home | Blog"):
        assert noise not in doc.text
    # A paragraph inside a list item or table cell is read once, not twice.
    assert doc.text.count("Unplug the bulbs") == 1
    assert doc.text.count("Reset time") == 1


def test_html_text_outside_paragraphs_is_read_with_its_lines_and_code(tmp_path):
    path = tmp_path / "pair.html"
    path.write_text(
        "<html><head><title>Pair a bulb</title></head><body><div class='article-body'>"
        "<div>To pair a bulb, open the <b>Lumora</b> app.</div>"
        "Hold the reset button for 10&nbsp;seconds.<br>Then release it."
        "<p>Step 1<br/>Step 2</p>"
        "<h5>Older bulbs</h5><blockquote>Switch them off and on 5 times.</blockquote>"
        "<dl><dt>Amber light</dt><dd>Pairing mode</dd></dl>"
        "<pre><code><span>curl</span> <span>-X</span> POST \\\n"
        "  https://hub.local/pair\n<span>if</span> ok:\n    print(<span>'done'</span>)</code></pre>"
        "</div></body></html>",
        encoding="utf-8",
    )

    doc = load_document(path, "pair.html")

    assert doc.text.split("\n\n") == [
        "To pair a bulb, open the Lumora app.",
        "Hold the reset button for 10\u00a0seconds.\nThen release it.",
        "Step 1\nStep 2",
        "##### Older bulbs",
        "Switch them off and on 5 times.",
        "Amber light",
        "Pairing mode",
        "```\ncurl -X POST \\\n  https://hub.local/pair\nif ok:\n    print('done')\n```",
    ]


def test_a_page_written_only_in_divs_is_read(tmp_path):
    path = tmp_path / "divs.html"
    path.write_text("<html><body><div><div>Reset the hub.</div>Then wait.</div></body></html>")

    assert load_document(path, "divs.html").text == "Reset the hub.\n\nThen wait."


def test_markdown_front_matter_gives_the_title_and_is_not_indexed(tmp_path):
    path = tmp_path / "frontmatter.md"
    path.write_text('---\ntitle: "Pair a bulb with the hub"\ntags: [bulb]\n---\n\nOpen the app.\n')
    only = tmp_path / "only.md"
    only.write_text("---\ntitle: Draft\n---\n")

    doc = load_document(path, "frontmatter.md")

    assert doc.title == "Pair a bulb with the hub"
    assert doc.text.strip() == "Open the app." and "tags" not in doc.text
    with pytest.raises(DocumentError, match="no text"):
        load_document(only, "only.md")


@pytest.mark.parametrize(
    ("text", "title"),
    [
        (
            "```bash\n# download the installer\ncurl -O x\n```\n\n# Install the app\n",
            "Install the app",
        ),
        ("Install the app\n===============\n\nRun it.\n", "Install the app"),
        ("---\n\n# Thematic break first\n\n---\n\nText.\n", "Thematic break first"),
    ],
    ids=["comment in code", "underlined", "rule, not front matter"],
)
def test_a_markdown_title_is_its_first_real_heading(tmp_path, text, title):
    path = tmp_path / "install.md"
    path.write_text(text)

    assert load_document(path, "install.md").title == title


def test_html_without_title_tag_uses_its_first_heading(tmp_path):
    path = tmp_path / "page.htm"
    path.write_text("<body><h1>Energy reports</h1><p>Weekly usage.</p></body>", encoding="utf-8")

    assert load_document(path, "page.htm").title == "Energy reports"


@pytest.mark.parametrize("part", ["document.xml", "document.bin"])
def test_a_docx_that_unpacks_to_too_much_text_is_refused_before_it_is_parsed(
    tmp_path, make_docx, part
):
    import zipfile

    from knowledge.loaders import DOCX_MAX_XML_BYTES

    normal = make_docx(tmp_path / "normal.docx", [("Normal", "Two years of cover.")])
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(normal) as source, zipfile.ZipFile(bomb, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/document.xml":
                body = b"<w:p/>" * (DOCX_MAX_XML_BYTES // 6 + 1)
                data = data.replace(b"<w:body>", b"<w:body>" + body, 1)
            # The document part may have any name the package's relationships give it.
            data = data.replace(b"document.xml", part.encode())
            name = item.filename.replace("document.xml", part)
            target.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)

    with pytest.raises(DocumentError, match="unpacks to 17 MB of text"):
        load_document(bomb, "bomb.docx")
    assert bomb.stat().st_size < 100_000
    assert "Two years" in load_document(normal, "normal.docx").text


def _docx_with_document_xml(normal: Path, target: Path, change) -> Path:
    """A copy of the DOCX ``normal`` whose ``word/document.xml`` is ``change(xml)``."""
    import zipfile

    with zipfile.ZipFile(normal) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/document.xml":
                data = change(data)
            copy.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return target


def test_a_docx_that_lies_about_its_packed_sizes_is_refused(tmp_path, make_docx):
    import struct
    import zipfile

    from knowledge.loaders import DOCX_MAX_XML_BYTES

    normal = make_docx(tmp_path / "normal.docx", [("Normal", "Two years of cover.")])
    body = b"<w:p/>" * (DOCX_MAX_XML_BYTES // 6 + 1)
    bomb = _docx_with_document_xml(
        normal, tmp_path / "bomb.docx", lambda xml: xml.replace(b"<w:body>", b"<w:body>" + body, 1)
    )
    # The central directory then says the big part is stored, packed as large as unpacked.
    raw = bytearray(bomb.read_bytes())
    entry = raw.index(b"PK\x01\x02", raw.index(b"word/document.xml") + 1)
    while raw[entry + 46 : entry + 46 + 17] != b"word/document.xml":
        entry = raw.index(b"PK\x01\x02", entry + 4)
    unpacked = struct.unpack_from("<I", raw, entry + 24)[0]
    struct.pack_into("<I", raw, entry + 20, unpacked)
    bomb.write_bytes(bytes(raw))
    with zipfile.ZipFile(bomb) as package:
        claimed = package.getinfo("word/document.xml")
        assert claimed.compress_size == claimed.file_size > DOCX_MAX_XML_BYTES

    with pytest.raises(DocumentError, match="corrupt"):
        load_document(bomb, "bomb.docx")


def test_a_docx_with_broken_xml_is_reported_as_corrupt(tmp_path, make_docx):
    normal = make_docx(tmp_path / "normal.docx", [("Normal", "Two years of cover.")])
    # cut off mid-element
    broken = _docx_with_document_xml(
        normal, tmp_path / "broken.docx", lambda xml: xml[: len(xml) // 2]
    )

    with pytest.raises(DocumentError, match="corrupt or not a Word document"):
        load_document(broken, "broken.docx")


def test_docx_headings_become_markdown_headings(tmp_path, make_docx):
    path = make_docx(
        tmp_path / "warranty.docx",
        [
            ("Heading 1", "Lumora warranty"),
            ("Normal", "Every device is covered for two years."),
            ("Heading 2", "How to claim"),
            ("Normal", "Send us the serial number."),
        ],
    )

    doc = load_document(path, "warranty.docx")

    assert doc.format == "docx"
    assert doc.title == "Lumora warranty"
    assert doc.text.splitlines() == [
        "# Lumora warranty",
        "",
        "Every device is covered for two years.",
        "",
        "## How to claim",
        "",
        "Send us the serial number.",
    ]


def test_docx_list_items_stay_list_items(tmp_path, make_docx):
    path = make_docx(
        tmp_path / "formatting.docx",
        [
            ("Heading 1", "Format your message"),
            ("Normal", "Everything you can format:"),
            ("List Bullet", "Tables"),
            ("List Number", "Quotes"),
        ],
    )

    text = load_document(path, "formatting.docx").text

    # So an overview page written in Word is read as one (see knowledge.retriever.overviews).
    assert text.splitlines()[-3:] == ["- Tables", "", "- Quotes"]


def test_docx_tables_are_read_in_place_one_line_per_row(tmp_path):
    from docx import Document

    document = Document()
    document.add_heading("Warranty periods", level=1)
    document.add_paragraph("Each device has its own cover.")
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(
        table.rows, [("Device", "Cover"), ("Orbit speaker", "2 years"), ("Hub", "")], strict=True
    ):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    merged = document.add_table(rows=1, cols=3)
    merged.rows[0].cells[0].merge(merged.rows[0].cells[1]).text = "Lamps"
    merged.rows[0].cells[2].text = "3 years"
    document.add_paragraph("Claims need the serial number.")
    path = tmp_path / "warranty.docx"
    document.save(str(path))
    only_table = Document()
    only_table.add_table(rows=1, cols=2).rows[0].cells[1].text = "Orbit speaker: 2 years"
    only_table.save(str(tmp_path / "table.docx"))

    doc = load_document(path, "warranty.docx")

    assert [line for line in doc.text.splitlines() if line] == [
        "# Warranty periods",
        "Each device has its own cover.",
        "Device | Cover",
        "Orbit speaker | 2 years",
        "Hub",
        "Lamps | 3 years",  # a merged cell once
        "Claims need the serial number.",
    ]
    assert load_document(tmp_path / "table.docx", "table.docx").text == "Orbit speaker: 2 years"


def test_a_docx_cell_merged_down_many_rows_is_read_once(tmp_path):
    from docx import Document

    document = Document()
    rows = 300  # (python-docx itself cannot write many more merged rows)
    table = document.add_table(rows=rows, cols=2)
    category = table.cell(0, 0).merge(table.cell(rows - 1, 0))  # one cell down the whole column
    category.text = "Lamps " + "with a long description " * 50
    for n in range(rows):
        table.cell(n, 1).text = f"Model {n}"
    path = tmp_path / "price-list.docx"
    document.save(str(path))

    lines = load_document(path, "price-list.docx").text.splitlines()

    assert lines[0].startswith("Lamps with a long") and lines[0].endswith("| Model 0")
    assert lines[-1] == f"Model {rows - 1}"
    assert sum("Lamps" in line for line in lines) == 1, "not repeated on every row"


def test_pdf_text_is_extracted(tmp_path, make_pdf):
    path = make_pdf(
        tmp_path / "guide.pdf", ["Quick start guide", "Press the pairing button twice."]
    )

    doc = load_document(path, "guide.pdf")

    assert doc.format == "pdf"
    assert doc.title == "Quick start guide"
    assert "Press the pairing button twice." in doc.text


def test_pdf_words_broken_at_line_ends_are_joined(tmp_path, make_pdf):
    path = make_pdf(
        tmp_path / "guide.pdf",
        [
            "Setup guide",
            "Open the configu-",
            "ration page. Our self-hosted plan runs on your own self-",
            "hosted server. Join the Wi-",
            "Fi network first.",
        ],
    )

    text = load_document(path, "guide.pdf").text

    assert "Open the configuration page." in text
    # The document writes the compound with its hyphen elsewhere, so the break keeps it.
    assert "your own self-hosted server." in text
    # A capital after the break is not the rest of a word.
    assert "Wi-\nFi network" in text


def _body(topic: str, lines: int = 8) -> str:
    """A full page's worth of lines about ``topic``, each its own."""
    return "\n".join(f"{topic} note {n}: hold the {topic.lower()} button." for n in range(lines))


def test_pdf_word_broken_across_a_page_break_and_a_footer_is_joined(tmp_path):
    pages = [
        f"Hub manual\n{_body('Pairing')}\nThe hub asks for authenti-\nLumora confidential",
        f"cation before pairing.\n{_body('Reset')}\nLumora confidential",
        f"Reset the hub with the pin.\n{_body('Battery')}\nLumora confidential",
    ]
    path = _pdf_of_pages(tmp_path / "manual.pdf", pages, [0, 1, 2])

    text = load_document(path, "manual.pdf").text

    assert "The hub asks for authentication before pairing." in text
    assert text.count("Lumora confidential") == 1


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("con\u00adfigure the e-mail", "configure the e-mail"),
        ("Wi\u00ad\nFi", "WiFi"),  # a soft hyphen is always inside a word
        ("the e-mail and the e-\nmail", "the e-mail and the e-mail"),
        ("self\u2010hosted, and self-\nhosted", "self\u2010hosted, and self-hosted"),
        # Written as one word elsewhere too: the break is the typesetter's.
        ("sign in with your login: log-\nin", "sign in with your login: login"),
        # Both halves are words of the document: a compound.
        ("built in, and built-\nin", "built in, and built-in"),
        ("Wi-Fi-\nenabled", "Wi-Fi-enabled"),
        ("T-\nshirt", "T-shirt"),
        # Two words of the document: a compound's own hyphen, as most line breakers leave it.
        ("a built-\nin battery, built in 2024", "a built-in battery, built in 2024"),
        (
            "a built-\nin battery, built in the configu-\nration",
            "a built-in battery, built in the configuration",
        ),
        ("good ide-\nas", "good ideas"),
        ("state-of-the-\nart", "state-of-the-art"),
        ("--no-\ncache", "--no-cache"),
        ("USB-\npowered", "USB-powered"),
        # Left as they are: a link, an address, a file name, a longer token, a hyphen that
        # stands for a word to come, a dash, a range.
        ("https://help.lumora.example/pair-\na-bulb", "https://help.lumora.example/pair-\na-bulb"),
        ("support@lumora-\nhome.example", "support@lumora-\nhome.example"),
        ("run lumora-\nsetup.exe", "run lumora-\nsetup.exe"),
        ("3rd-\nparty", "3rd-\nparty"),
        ("customer's-\nfacing", "customer's-\nfacing"),
        ("both pre-\nand post-2020", "both pre-\nand post-2020"),
        ("short-\nversus long-term", "short-\nversus long-term"),
        ("a list -\nitem", "a list -\nitem"),
        ("pages 2-\n3", "pages 2-\n3"),
    ],
)
def test_broken_words(text, read):
    assert join_broken_words(text) == read


def test_pdf_running_headers_and_page_numbers_are_read_once_or_not_at_all(tmp_path):
    topics = ["Pairing", "Warranty", "Reset", "Battery"]
    pages = [
        f"Lumora Hub 2 User Manual\n{topic} is explained on this page.\n{_body(topic)}\n"
        f"Page {n} of 4"
        for n, topic in enumerate(topics, start=1)
    ]
    path = _pdf_of_pages(tmp_path / "manual.pdf", pages, [0, 1, 2, 3])

    doc = load_document(path, "manual.pdf")

    assert doc.title == "Lumora Hub 2 User Manual"
    assert doc.text.count("Lumora Hub 2 User Manual") == 1
    assert "Page" not in doc.text.replace("on this page", "")
    for topic in topics:
        assert f"{topic} is explained on this page." in doc.text


def test_two_line_headers_and_a_footer_under_the_page_number():
    pages = [
        f"Acme\nUser manual\n{_body(topic)}\n\u00a9 2026 Acme Inc.\n{n}"
        for n, topic in enumerate(["Pairing", "Reset", "Battery", "Warranty"], 1)
    ]

    assert without_running_lines(pages) == [
        f"Acme\nUser manual\n{_body('Pairing')}",
        _body("Reset"),
        _body("Battery"),
        f"{_body('Warranty')}\n\u00a9 2026 Acme Inc.",
    ]


def test_short_pages_and_sentences_keep_their_repeated_lines():
    # A catalogue's cards: the same warranty line ends most of them.
    cards = [f"Lumora Bulb {c}\nPrice: EUR {n}\nWarranty: 2 years" for n, c in enumerate("ABCD")]
    cards.append("Lumora Lamp X\nPrice: EUR 90\nWarranty: 5 years")
    assert without_running_lines(cards) == cards
    # Full pages that end with the same short instruction.
    pages = [f"{_body(t)}\nThen restart the hub." for t in ("Pairing", "Reset", "Battery")]
    assert without_running_lines(pages) == pages


@pytest.mark.parametrize(
    "pages",
    [
        # Lines that differ only in their numbers are the pages' own.
        [f"Step {n}\n{_body('Pairing')}\nHold it for {n * 5} seconds" for n in range(1, 5)],
        [
            f"Lumora Hub {n}\nRange: 30 m.\nHold the button for 5 seconds to reset."
            for n in (2, 3, 4)
        ],
        [f"Error {e}\n{_body('Reset')}\nRestart it and try again." for e in (401, 403, 404, 500)],
        [f"Firmware 2.{n}.0\nFixes for pairing.\nPrice: EUR {10 + n}" for n in range(4)],
        # A number near a page's end that does not count up with the pages.
        ["Welcome\nText about the hub.", "Default PIN:\n0000", "More text.\nWords.", "End.\nLast."],
        # Repeated, but in the middle of each page.
        [f"Topic {c}\nCall us on 555 0100.\nMore about {c}." for c in "ABCD"],
        # At the top of fewer than 60% of the pages.
        [f"Pairing\nText {c}." for c in "ABC"] + [f"Other {c}\nMore {c}." for c in "DEFG"],
        # Repeated on full pages, but those are fewer than 60% of the pages.
        [
            f"{_body('Pairing')}\nWarranty: 2 years" if n in (1, 4, 7) else f"Note {n}\nShort."
            for n in range(10)
        ],
        # Two pages only.
        ["Lumora notes\nPairing takes a minute.", "Lumora notes\nWarranty is two years."],
    ],
)
def test_page_content_is_never_taken_for_a_running_line(pages):
    assert without_running_lines(pages) == pages


def test_page_numbers_that_count_up_go_and_other_numbers_stay():
    pages = [
        "Welcome\nText.\n1",
        "Default PIN:\n0000\n2",
        "More text.\nWords.\n3",
        "End.\nLast.\n4",
    ]

    assert without_running_lines(pages) == [
        "Welcome\nText.",
        "Default PIN:\n0000",
        "More text.\nWords.",
        "End.\nLast.",
    ]


def _corrupt_pdf(path, make_pdf):
    path.write_bytes(b"%PDF-1.4\nthis is not really a PDF\n")


def _self_referencing_pdf(path, make_pdf):
    # The content stream's /Length points at the stream itself; pypdf raises LimitReachedError.
    make_pdf(path, ["Loop"], stream_length=b"5 0 R")


def _pdf_without_text(path, make_pdf):
    make_pdf(path, [])


def _encrypted_pdf(path, make_pdf):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    with path.open("wb") as out:
        writer.write(out)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_a_pdf_protected_only_against_editing_is_read(tmp_path, make_pdf, algorithm):
    from pypdf import PdfWriter

    plain = make_pdf(tmp_path / "plain.pdf", ["Hold the reset button for ten seconds."])
    writer = PdfWriter(clone_from=plain)
    # No password to open (as in any viewer), one to edit: Acrobat's usual protection.
    writer.encrypt(user_password="", owner_password="owner secret", algorithm=algorithm)
    protected = tmp_path / "manual.pdf"
    with protected.open("wb") as out:
        writer.write(out)
    locked = PdfWriter(clone_from=plain)
    locked.encrypt(user_password="open secret", algorithm=algorithm)
    with (tmp_path / "locked.pdf").open("wb") as out:
        locked.write(out)

    doc = load_document(protected, "manual.pdf")

    assert "Hold the reset button for ten seconds." in doc.text
    with pytest.raises(DocumentError, match="the PDF needs a password to open"):
        load_document(tmp_path / "locked.pdf", "locked.pdf")


def _empty(path, make_pdf):
    path.write_bytes(b"")


def _corrupt_docx(path, make_pdf):
    path.write_bytes(b"PK\x03\x04 not a real archive")


def _program(path, make_pdf):
    path.write_bytes(b"MZ\x90\x00")


@pytest.mark.parametrize(
    ("name", "write", "reason"),
    [
        ("broken.pdf", _corrupt_pdf, "the PDF could not be read"),
        ("loop.pdf", _self_referencing_pdf, "the PDF could not be read"),
        ("scanned.pdf", _pdf_without_text, "no text could be read from the file"),
        ("locked.pdf", _encrypted_pdf, "the PDF needs a password to open"),
        ("empty.md", _empty, "the file is empty"),
        ("empty.pdf", _empty, "the file is empty"),
        ("letter.docx", _corrupt_docx, "the DOCX file is corrupt or not a Word document"),
        ("setup.exe", _program, "unsupported file type '.exe'"),
        ("README", _program, "unsupported file type '(none)'"),
    ],
)
def test_bad_file_raises_document_error_naming_the_file(tmp_path, make_pdf, name, write, reason):
    path = tmp_path / name
    write(path, make_pdf)

    with pytest.raises(DocumentError) as caught:
        load_document(path, f"uploads/{name}")

    assert caught.value.reason.startswith(reason)
    assert caught.value.source == f"uploads/{name}"
    assert str(caught.value).startswith(f"uploads/{name}: ")


def test_unsupported_type_lists_the_supported_ones(tmp_path):
    path = tmp_path / "setup.exe"
    path.write_bytes(b"MZ")

    with pytest.raises(DocumentError) as caught:
        load_document(path, "setup.exe")

    for suffix in (".md", ".txt", ".html", ".pdf", ".docx"):
        assert suffix in caught.value.reason


def test_over_size_file_is_refused_with_both_sizes(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 2_000)

    with pytest.raises(DocumentError) as caught:
        load_document(path, "big.txt", LoadLimits(max_file_bytes=1_000))

    assert caught.value.reason == "the file is 2,000 bytes, over the limit of 1,000"
    assert "big.txt" in str(caught.value)
    assert load_document(path, "big.txt", LoadLimits(max_file_bytes=2_000)).text


def test_pdf_with_too_many_pages_is_refused(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.add_blank_page(200, 200)
    path = tmp_path / "manual.pdf"
    with path.open("wb") as out:
        writer.write(out)

    with pytest.raises(DocumentError) as caught:
        load_document(path, "manual.pdf", LoadLimits(max_pdf_pages=1))

    assert caught.value.reason == "the PDF has 2 pages, over the limit of 1"


def _pdf_of_pages(path: Path, streams: list[str], pages: list[int]) -> Path:
    """A PDF whose page ``n`` draws the text of ``streams[pages[n]]``, a compressed content stream
    that several pages may share."""
    import zlib

    from tests.knowledge.conftest import pdf_bytes

    first_stream = 4
    first_page = first_stream + len(streams)
    kids = " ".join(f"{first_page + n} 0 R" for n in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for text in streams:
        lines = " ".join(f"({line}) '" for line in text.splitlines())
        packed = zlib.compress(f"BT /F1 14 Tf 72 720 Td 18 TL {lines} ET".encode())
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(packed), packed)
        )
    for stream in pages:
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (first_stream + stream)
        )
    path.write_bytes(pdf_bytes(objects))
    return path


def test_pdf_pages_sharing_one_content_stream_are_read_once(tmp_path):
    shared = "\n".join(f"Step {n}: press the pairing button." for n in range(400))
    path = _pdf_of_pages(tmp_path / "shared.pdf", [shared, "Warranty: two years."], [0] * 300 + [1])

    doc = load_document(path, "shared.pdf")

    assert doc.text.count("Step 399: press the pairing button.") == 1
    assert doc.text.endswith("Warranty: two years.")


def test_pdf_with_more_text_than_the_limit_is_refused(tmp_path, monkeypatch):
    import knowledge.loaders

    monkeypatch.setattr(knowledge.loaders, "MAX_PDF_TEXT_CHARS", 10_000)
    page = "\n".join(f"Line {n} of a long catalogue page." for n in range(120))
    within = _pdf_of_pages(tmp_path / "short.pdf", [page, page + "\nMore."], [0, 1])
    over = _pdf_of_pages(
        tmp_path / "long.pdf", [page, page + "\nMore.", page + "\nEnd."], [0, 1, 2]
    )

    assert "More." in load_document(within, "short.pdf").text
    with pytest.raises(DocumentError) as caught:
        load_document(over, "long.pdf")
    assert caught.value.reason == (
        "the PDF holds more than 10,000 characters of text; split it into smaller files"
    )


@pytest.mark.parametrize("limit", ["page", "all"])
def test_pdf_whose_pages_unpack_to_too_many_drawing_instructions_is_refused_before_reading(
    tmp_path, monkeypatch, limit
):
    import knowledge.loaders

    page = "\n".join(f"Line {n} of a long catalogue page." for n in range(120))
    if limit == "page":
        monkeypatch.setattr(knowledge.loaders, "MAX_PDF_PAGE_CONTENT_BYTES", 4_000)
    else:
        monkeypatch.setattr(knowledge.loaders, "MAX_PDF_CONTENT_BYTES", 10_000)
    path = _pdf_of_pages(tmp_path / "big.pdf", [page, page + "\nMore.", page + "\nEnd."], [0, 1, 2])
    extracted = []
    monkeypatch.setattr(
        "pypdf.PageObject.extract_text", lambda self, *a, **k: extracted.append(1) or "text"
    )

    with pytest.raises(DocumentError) as caught:
        load_document(path, "big.pdf")

    assert caught.value.reason.startswith(
        f"page {1 if limit == 'page' else 3} of the PDF unpacks to more drawing instructions"
    )
    assert len(extracted) == (0 if limit == "page" else 2), "refused before reading the page"


# ----- inputs that once took quadratic time. Linear work here takes well under a second; the
# bounds only catch a return to quadratic time, which took minutes to hours at these sizes.


def test_a_file_of_unclosed_links_loads_in_linear_time(tmp_path):
    path = tmp_path / "links.md"
    path.write_text(
        "# Links\n\n" + "[a](" * 250_000 + "\n\nSee [the guide](https://x.example/g).\n"
    )

    started = time.perf_counter()
    doc = load_document(path, "links.md")

    assert time.perf_counter() - started < 20
    assert doc.text.rstrip().endswith("See the guide.")


@pytest.mark.parametrize(
    "body, blocks",
    [
        ("<p>x" * 20_000, 1),
        ("<ul>" + "<li>x" * 20_000 + "</ul>", 1),
        ("<div>x" * 20_000, 20_000),  # each div's own text is a line of the page
        ("<p>a</p><p>b</p>", 2),
    ],
    ids=["unclosed paragraphs", "unclosed list items", "unclosed divs", "closed paragraphs"],
)
def test_unclosed_html_blocks_load_in_linear_time(tmp_path, body, blocks):
    path = tmp_path / "page.html"
    path.write_text(f"<html><body><h1>Page</h1>{body}</body></html>")

    started = time.perf_counter()
    doc = load_document(path, "page.html")

    assert time.perf_counter() - started < 20
    assert doc.text.count("\n\n") == blocks  # the heading, then each outermost block once


@pytest.mark.parametrize(
    ("title", "kept"),
    [
        ("Orbit Hub manual", "Orbit Hub manual"),
        ("  Orbit   Hub\nmanual ", "Orbit Hub manual"),
        ("untitled", ""),
        ("PowerPoint Presentation", ""),
        ("Document1", ""),
        ("Microsoft Word - Orbit_manual_v3_FINAL.docx", ""),
        ("Orbit_manual_v3_FINAL.docx", ""),
        ("The title of the manual", "The title of the manual"),
    ],
)
def test_a_title_property_a_tool_wrote_is_not_the_title(title, kept):
    assert metadata_title(title) == kept


def test_a_pdf_with_a_placeholder_title_takes_its_first_line(tmp_path, make_pdf):
    from pypdf import PdfWriter

    plain = make_pdf(tmp_path / "plain.pdf", ["Orbit Hub quick start", "Plug it in."])
    writer = PdfWriter(clone_from=plain)
    writer.add_metadata({"/Title": "Microsoft Word - orbit_qs_FINAL.docx"})
    path = tmp_path / "qs.pdf"
    with path.open("wb") as out:
        writer.write(out)

    assert load_document(path, "qs.pdf").title == "Orbit Hub quick start"


def test_pdf_ligatures_are_read_as_their_letters(tmp_path, make_pdf, monkeypatch):
    from knowledge import loaders

    path = make_pdf(tmp_path / "lig.pdf", ["placeholder"])
    # Fonts that draw "fi" as one glyph give the extracted text U+FB01.
    monkeypatch.setattr(
        loaders, "_pdf_page_texts", lambda pages, source: ["Conﬁgure the oﬀice ﬂoor"]
    )

    assert load_document(path, "lig.pdf").text == "Configure the office floor"


def test_docx_text_in_tracked_changes_text_boxes_and_content_controls_is_read(tmp_path):
    from docx import Document
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    document = Document()
    style = document.styles.add_style("Manual Heading", WD_STYLE_TYPE.PARAGRAPH)
    style.base_style = document.styles["Heading 1"]
    document.add_paragraph("Reset the hub", style="Manual Heading")
    document.add_paragraph("Wiring", style="Heading 4")
    held = document.add_paragraph("Hold the button for ")
    held._p.append(parse_xml(f"<w:ins {w}><w:r><w:t>10 seconds</w:t></w:r></w:ins>"))
    held._p.append(parse_xml(f"<w:del {w}><w:r><w:delText>5 seconds</w:delText></w:r></w:del>"))
    model = document.add_paragraph("Model number:\t")
    model._p.append(
        parse_xml(f"<w:sdt {w}><w:sdtContent><w:r><w:t>LM-2000</w:t></w:r></w:sdtContent></w:sdt>")
    )
    boxed = document.add_paragraph("See the box.")
    box = "<w:txbxContent><w:p><w:r><w:t>Unplug first.</w:t></w:r></w:p></w:txbxContent>"
    boxed._p.append(
        parse_xml(
            f"<w:r {w} {mc}><mc:AlternateContent><mc:Choice Requires='wps'><w:drawing>{box}"
            f"</w:drawing></mc:Choice><mc:Fallback><w:pict>{box}</w:pict></mc:Fallback>"
            "</mc:AlternateContent></w:r>"
        )
    )
    document.element.body.insert(
        len(document.element.body) - 1,
        parse_xml(
            f"<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>Warranty: two years.</w:t></w:r></w:p>"
            "</w:sdtContent></w:sdt>"
        ),
    )
    numbered = document.add_paragraph("Open the app")
    numbered._p.get_or_add_pPr().append(
        parse_xml(f"<w:numPr {w}><w:ilvl w:val='0'/><w:numId w:val='1'/></w:numPr>")
    )
    path = tmp_path / "manual.docx"
    document.save(str(path))

    doc = load_document(path, "manual.docx")

    assert doc.title == "Reset the hub"
    assert doc.text.split("\n\n") == [
        "# Reset the hub",
        "#### Wiring",
        "Hold the button for 10 seconds",
        "Model number:\tLM-2000",
        "See the box.\nUnplug first.",
        "Warranty: two years.",
        "- Open the app",
    ]


@pytest.mark.parametrize("marked", ["main", "article", "neither"])
def test_a_help_center_page_is_read_without_the_site_around_the_article(tmp_path, marked):
    open_tag, close_tag = ("", "") if marked == "neither" else (f"<{marked}>", f"</{marked}>")
    doc = load_html(
        tmp_path,
        "<html><head><title>Pair a bulb – Lumora Help Center</title></head><body>"
        "<header><a href='/'>Lumora</a> Submit a request</header>"
        "<ol class='breadcrumbs' role='navigation'><li>Lumora</li><li>Hub</li></ol>"
        "<aside><h3>Related</h3><p>Reset the hub</p></aside>"
        f"{open_tag}<h1>Pair a bulb</h1><p>Open the app and tap Add.</p>{close_tag}"
        "<form><p>Was this article helpful?</p><button>Yes</button></form>"
        "<div role='contentinfo'>© Lumora</div></body></html>",
    )

    assert doc.title == "Pair a bulb"
    assert doc.text == "# Pair a bulb\n\nOpen the app and tap Add."


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            '<form id="aspnetForm"><div><h1>Reset the hub</h1><p>Hold the button.</p></div></form>',
            "# Reset the hub\n\nHold the button.",
        ),
        (
            '<a class="card"><h2>Pair a bulb</h2><p>Hold it.</p></a><span><pre>l1\n  l2</pre></span>',
            "## Pair a bulb\n\nHold it.\n\n```\nl1\n  l2\n```",
        ),
        (
            "<section><header><h2>Step 1: Unbox</h2></header><p>Take it out.</p>"
            '<aside class="note"><p>Use the supplied adapter only.</p></aside></section>',
            "## Step 1: Unbox\n\nTake it out.\n\nUse the supplied adapter only.",
        ),
        ("<pre>```\nx\n~~~\ny</pre><h2>Next</h2>", "````\n```\nx\n~~~\ny\n````\n\n## Next"),
    ],
    ids=["page in a form", "blocks in a link", "step header and note", "fences in code"],
)
def test_html_structure_is_kept_around_its_blocks(tmp_path, body, text):
    assert load_html(tmp_path, f"<html><body>{body}</body></html>").text == text


@pytest.mark.parametrize("label", ["iso-8859-1", "us-ascii", "utf-16"])
def test_html_charset_labels_are_read_as_browsers_read_them(tmp_path, label):
    path = tmp_path / "quotes.html"
    body = "<p>It\u2019s \u201cbest\u201d \u2013 \u20ac5.</p>".encode("cp1252")
    path.write_bytes(f'<html><head><meta charset="{label}"></head><body>'.encode() + body)

    assert load_document(path, "quotes.html").text == "It\u2019s \u201cbest\u201d \u2013 \u20ac5."


def test_docx_hyphens_tabs_moves_and_controls_in_tables_read_as_word_shows_them(tmp_path):
    from docx import Document
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    document = Document()
    para = document.add_paragraph()
    para._p.append(
        parse_xml(
            f"<w:r {w}><w:t>Turn on Wi</w:t><w:noBreakHyphen/><w:t>Fi, then</w:t><w:ptab/>"
            "<w:t>wait.</w:t></w:r>"
        )
    )
    moved = document.add_paragraph()
    moved._p.append(parse_xml(f"<w:moveFrom {w}><w:r><w:t>Moved. </w:t></w:r></w:moveFrom>"))
    moved._p.append(parse_xml(f"<w:r {w}><w:t>Middle. </w:t></w:r>"))
    moved._p.append(parse_xml(f"<w:moveTo {w}><w:r><w:t>Moved.</w:t></w:r></w:moveTo>"))
    cell = "<w:tc><w:p><w:r><w:t>{}</w:t></w:r></w:p></w:tc>"
    wrapped = "<w:sdt><w:sdtContent>{}</w:sdtContent></w:sdt>"
    table = parse_xml(
        f"<w:tbl {w}><w:tr>{cell.format('Model')}{wrapped.format(cell.format('LM-2000'))}</w:tr>"
        + wrapped.format(f"<w:tr>{cell.format('Colour')}{cell.format('White')}</w:tr>")
        + f"<w:tr><w:tc>{wrapped.format('<w:p><w:r><w:t>Warranty</w:t></w:r></w:p>')}</w:tc>"
        f"{cell.format('2 years')}</w:tr></w:tbl>"
    )
    document.element.body.insert(len(document.element.body) - 1, table)
    path = tmp_path / "specs.docx"
    document.save(str(path))

    assert load_document(path, "specs.docx").text.split("\n\n") == [
        "Turn on Wi-Fi, then\twait.",
        "Middle. Moved.",
        "Model | LM-2000",
        "Colour | White",
        "Warranty | 2 years",
    ]


@pytest.mark.parametrize(
    ("text", "title", "body"),
    [
        ("---\r\ntitle: Pair a bulb\r\n---\r\n\r\n# Pairing\r\n", "Pair a bulb", "# Pairing"),
        ("---\na: " + "[" * 3000 + "]" * 3000 + "\n---\n\nText.\n", "Notes", None),
    ],
    ids=["windows line ends", "nested too deep"],
)
def test_unusual_front_matter_is_read_or_left_as_text(tmp_path, text, title, body):
    path = tmp_path / "notes.md"
    path.write_bytes(text.encode())

    doc = load_document(path, "notes.md")

    assert doc.title == title
    assert doc.text.strip() == body if body else doc.text.startswith("---")
