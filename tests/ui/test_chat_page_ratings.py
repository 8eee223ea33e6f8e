"""Which stored answer a thumb on the chat page lands on: the page's messages include boxes and
notices that are not stored answers."""

from __future__ import annotations

from chatbot.conversations import StoredTurn
from ui.gradio_app import SORRY, SOURCES_TITLE, answer_turn

CONFIRMATION = "Thanks, I've passed this conversation to our support team."


def stored(turn_id: int, content: str) -> StoredTurn:
    return StoredTurn(turn_id, "s", "assistant", content, 1, 0.0, {})


ANSWERS = [
    stored(2, "I couldn't find an answer to that."),
    stored(4, "Hold the button for 10 seconds, until the light is <amber>."),
    stored(7, "Open **Devices** > Hub."),
]
HISTORY = [
    {"role": "user", "content": "banana bread?"},
    {"role": "assistant", "content": f"I couldn't find an answer to that.\n\n{CONFIRMATION}"},
    {"role": "user", "content": "how do i reset the hub?"},
    {
        "role": "assistant",
        "content": "Hold the button for 10 seconds, until the light is &lt;amber&gt;.",
    },
    {"role": "assistant", "content": "1. **Reset the hub**", "metadata": {"title": SOURCES_TITLE}},
    {"role": "user", "content": "and then?"},
    {"role": "assistant", "content": SORRY},  # an error: nothing stored
    {"role": "user", "content": "and then?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Open **Devices** &gt; Hub."}]},
]


def test_each_answer_maps_to_its_own_stored_turn():
    assert [answer_turn(HISTORY, i, ANSWERS) for i in (1, 3, 8)] == ANSWERS


def test_boxes_notices_and_questions_map_to_no_turn():
    for index in (0, 4, 6):
        assert answer_turn(HISTORY, index, ANSWERS) is None, index


def test_a_stored_answer_the_page_never_showed_is_skipped():
    unshown = [ANSWERS[0], stored(3, "An answer shown in another tab."), *ANSWERS[1:]]
    assert answer_turn(HISTORY, 3, unshown) == ANSWERS[1]
    assert answer_turn(HISTORY, 8, unshown) == ANSWERS[2]
