"""Text shown as Markdown on the Gradio pages: no raw HTML and no image that loads anything."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from ui.gradio_app import history_turns, safe_markdown

IMAGES = {
    "inline": "see ![the hub](http://tracker.example/a.png)",
    "brackets in the alt text": "see ![a[b]](http://tracker.example/a.png)",
    "reference": "see ![hub][r]\n\n[r]: http://tracker.example/a.png",
    "shortcut reference": "see ![r]\n\n[r]: http://tracker.example/a.png",
    "raw html": 'see <img src="http://tracker.example/a.png">',
}


def _render(text: str) -> str:
    return MarkdownIt("commonmark").render(text)


@pytest.mark.parametrize("text", IMAGES.values(), ids=IMAGES.keys())
def test_no_image_survives(text):
    assert "<img" in _render(text), "the unescaped text does show an image"

    shown = _render(safe_markdown(text))

    assert "<img" not in shown
    assert "see" in shown


@pytest.mark.parametrize("text", IMAGES.values(), ids=IMAGES.keys())
def test_escaping_twice_changes_nothing(text):
    once = safe_markdown(text)
    assert safe_markdown(once) == once


def test_links_and_ordinary_text_are_kept():
    text = "Hold **Reset** for 10 s, see [the guide](https://help.example.com/reset)! [1]"
    assert safe_markdown(text) == text


# Raw HTML in every place a reader might find it; none of it may reach the page as a tag.
ATTACKS = {
    "tag": "a <img src=x onerror=alert(1)> b",
    "closing tag": "x</p><script>alert(1)</script>",
    "html block": "<div>\n<img src=x onerror=alert(1)>\n</div>",
    "escaped backslash": "\\\\<img src=x onerror=alert(1)>",
    "unclosed code span": "`unclosed <img src=x onerror=alert(1)>",
    "fence with a backtick in its info": "```a`b\n<img src=x onerror=alert(1)>\n```",
    "code span across lines": "`a\n<img src=x onerror=alert(1)>`",
    "autolink": "<javascript:alert(1)>",
    "comment": "<!-- <img src=x onerror=alert(1)> -->",
}


@pytest.mark.parametrize("text", ATTACKS.values(), ids=ATTACKS.keys())
def test_no_raw_html_survives(text):
    shown = safe_markdown(text)
    rendered = _render(shown)

    assert "<img" not in rendered and "<script" not in rendered and "<a " not in rendered
    assert "<!--" not in rendered and "<div" not in rendered
    assert safe_markdown(shown) == shown


@pytest.mark.parametrize(
    ("text", "html"),
    [
        # Inside code, brackets and ampersands show as written, not as entities.
        (
            "open `https://<subdomain>.example.com` now",
            "<code>https://&lt;subdomain&gt;.example.com</code>",
        ),
        ("```js\nif (a < 3 && b > 1) {}\n```", "if (a &lt; 3 &amp;&amp; b &gt; 1) {}"),
        # Outside code, so do they, and an entity typed as text stays text.
        ("Tom & Jerry <3", "Tom &amp; Jerry &lt;3"),
        ("typed &lt;b&gt; here", "typed &amp;lt;b&amp;gt; here"),
        # Markdown of the answer still works.
        ("> quoted\n\n1. **one**", "<blockquote>"),
    ],
)
def test_text_and_code_show_as_written(text, html):
    shown = safe_markdown(text)

    assert html in _render(shown)
    assert safe_markdown(shown) == shown


def test_the_page_s_messages_come_back_as_written():
    said = ["the light is <amber>", "Tom & Jerry <3", "use `https://<sub>.example.com`"]
    page = [{"role": "user", "content": safe_markdown(text)} for text in said]

    assert [turn.content for turn in history_turns(page)] == said


@pytest.mark.parametrize(
    "typed", ["ab\x00cd", "don\x92t", "reset\x0bthe hub", "bell\x07 and\x1bescape", "plain"]
)
def test_a_message_typed_with_control_characters_is_found_again_as_stored(typed):
    from chatbot.service import validate_message
    from ui.gradio_app import _comparable

    # The page keeps what was typed, the store what the service kept: the same conversation.
    assert _comparable(typed) == _comparable(validate_message(typed, 4000))


@pytest.mark.parametrize(
    "title",
    [
        "Reset\\](https://evil.example/phish)",  # a backslash before the bracket
        "[Reset](https://evil.example/phish)",
        "Reset *the* `hub` <b>now</b> & ![x](http://tracker.example/a.png)",
    ],
)
def test_a_sources_title_and_heading_show_as_written_with_only_the_help_link(title):
    from chatbot.service import Source
    from ui.gradio_app import sources_markdown

    source = Source(source="reset.md", title=title, score=0.5, snippet="", heading=title)
    text = sources_markdown([source], linked=True)
    shown = _render(text)

    assert shown.count("<a ") == 1 and 'href="/help/reset.md"' in shown
    assert "evil.example" not in shown.split('href="')[1].split('"')[0]
    assert "<img" not in shown and "<em>" not in shown and "<b>" not in shown
    assert safe_markdown(text) == text, "the page escapes it again on every update"
