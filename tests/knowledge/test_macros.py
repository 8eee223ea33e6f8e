"""Help-center macros: snippet includes and UI tab/settings macros rendered as prose."""

from __future__ import annotations

import time

import pytest

from knowledge.loaders import DocumentError, load_document
from knowledge.macros import (
    MAX_INCLUDE_DEPTH,
    MAX_INCLUDED_CHARS,
    IncludeError,
    expand_macros,
    include_search_dirs,
    readable,
    render_ui_macros,
    resolve_includes,
)


def test_include_is_resolved_from_the_include_folder_beside_the_article(help_center):
    text = expand_macros("Intro.\n\n{!channel-actions.md!}\n", help_center / "pin-a-channel.md")

    assert "Hover over a channel in the left sidebar." in text
    assert "periwinkle channel badge" in text, "the snippet's own include was not resolved"
    assert "{!" not in text


def test_include_search_dirs_lists_the_include_folder_first(help_center):
    dirs = include_search_dirs(help_center / "pin-a-channel.md")

    assert dirs[0] == help_center / "include"
    assert help_center in dirs


def test_unknown_snippet_is_dropped(help_center):
    text = resolve_includes("Before.\n{!no-such-snippet.md!}\nAfter.", [help_center / "include"])

    assert text == "Before.\n\nAfter."


def test_include_cannot_escape_its_folder(tmp_path):
    (tmp_path / "secret.md").write_text("top secret", encoding="utf-8")
    include = tmp_path / "help" / "include"
    include.mkdir(parents=True)

    text = resolve_includes("{!../../secret.md!}", [include])

    assert "top secret" not in text


def test_a_snippet_that_includes_itself_appears_once(tmp_path):
    (tmp_path / "loop.md").write_text("again {!loop.md!}", encoding="utf-8")
    (tmp_path / "ping.md").write_text("ping {!pong.md!}", encoding="utf-8")
    (tmp_path / "pong.md").write_text("pong {!ping.md!}", encoding="utf-8")

    assert resolve_includes("{!loop.md!}", [tmp_path]) == "again "
    assert resolve_includes("{!ping.md!}", [tmp_path]) == "ping pong "


def test_includes_stop_at_a_chain_of_eight(tmp_path):
    for n in range(12):
        (tmp_path / f"s{n}.md").write_text(f"level{n} {{!s{n + 1}.md!}}", encoding="utf-8")

    text = resolve_includes("{!s0.md!}", [tmp_path])

    assert text.count("level") == MAX_INCLUDE_DEPTH
    assert "{!" not in text


def test_snippets_that_multiply_are_refused_quickly(tmp_path):
    # Each level includes the next twelve times: 12**8 copies if nothing stopped it.
    for n in range(9):
        (tmp_path / f"s{n}.md").write_text(f"line {n}\n" + f"{{!s{n + 1}.md!}}" * 12)

    started = time.perf_counter()
    with pytest.raises(IncludeError, match="more than"):
        resolve_includes("{!s0.md!}", [tmp_path])
    assert time.perf_counter() - started < 5


def test_a_huge_snippet_makes_a_clear_document_error(tmp_path):
    include = tmp_path / "include"
    include.mkdir()
    (include / "huge.md").write_text("x" * (MAX_INCLUDED_CHARS + 10))
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n{!huge.md!}\n")

    with pytest.raises(DocumentError, match="includes are too large"):
        load_document(doc, "doc.md")


def test_tabs_become_labelled_prose():
    text = render_ui_macros(
        "{start_tabs}\n\n{tab|desktop-web}\n\n1. Click **Pin**.\n\n"
        "{tab|mobile}\n\n1. Tap **Pin**.\n\n{end_tabs}\n"
    )

    assert "**Desktop and web app:**" in text
    assert "**Mobile:**" in text
    assert text.index("Desktop and web app") < text.index("Click **Pin**")
    assert text.index("Mobile") < text.index("Tap **Pin**")
    assert "{" not in text and "}" not in text


def test_settings_tab_and_relative_links_become_sentences():
    text = render_ui_macros(
        "{settings_tab|notifications}\n\n{relative|gear|stream-settings}\n\n{settings_tab|my-profile}"
    )

    assert "Go to the **Notifications** tab of the settings." in text
    assert "Go to **Stream settings**." in text
    assert "Go to the **My profile** tab of the settings." in text
    assert "{" not in text


def test_blank_lines_left_by_removed_macros_are_collapsed():
    text = render_ui_macros("Intro.\n\n{start_tabs}\n\n\n\n{end_tabs}\n\nOutro.")

    assert "\n\n\n" not in text
    assert text.startswith("Intro.") and text.rstrip().endswith("Outro.")


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("Press <kbd>Enter</kbd> to send.", "Press Enter to send."),
        ("Use <kbd>Shift</kbd> + <kbd>S</kbd>", "Use Shift + S"),
        ('Click the **trash** <i class="fa fa-trash-o"></i> icon.', "Click the **trash** icon."),
        (
            'the **ellipsis** (<i class="zulip-icon zulip-icon-more-vertical"></i>), and',
            "the **ellipsis**, and",
        ),
        ('a <img src="gear.png" alt="gear"> icon', "a gear icon"),
        ('<span class="hint">Tip</span>: one<br/>two', "Tip: one\ntwo"),
        # Placeholders in angle brackets are text, not HTML.
        ("Go to https://<subdomain>.zulipchat.com/", "Go to https://<subdomain>.zulipchat.com/"),
        ("    1. Nested step <kbd>A</kbd>", "    1. Nested step A"),
        ("no markup at all", "no markup at all"),
        # Only removed icons close up their space; keys keep theirs.
        ("Type <kbd>Ctrl</kbd> + <kbd>.</kbd> or use <kbd>?</kbd>", "Type Ctrl + . or use ?"),
        ("run `cd ..` then <kbd>Enter</kbd>", "run `cd ..` then Enter"),
        ("scp it:export.tar.gz .  <kbd>A</kbd>", "scp it:export.tar.gz .  A"),
        # Code is left as written.
        ('`<div id="chat"></div>` and <kbd>X</kbd>', '`<div id="chat"></div>` and X'),
        (
            '```html\n<a href="x"><img src="a" alt="Join"></a>\n```\nthen <kbd>B</kbd>',
            '```html\n<a href="x"><img src="a" alt="Join"></a>\n```\nthen B',
        ),
        # Angle brackets that are not HTML.
        ("If a <b and c> d <kbd>A</kbd>", "If a <b and c> d A"),
        ("Replace <a-id> with <kbd>A</kbd>", "Replace <a-id> with A"),
        # A link keeps its web address; a link within the help center its text.
        (
            '<a href="https://render.com">Render</a> or <a href="/help/x">help</a>',
            "Render (https://render.com) or help",
        ),
    ],
)
def test_readable_text_has_no_inline_html(written, read):
    assert readable(written) == read
