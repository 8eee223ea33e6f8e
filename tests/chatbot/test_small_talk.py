"""Greetings, thanks and goodbyes get a reply in kind; anything with a question in it does not."""

from __future__ import annotations

import pytest

from chatbot.prompts import HANDOFF_OFFER
from chatbot.small_talk import (
    ACK_REPLY,
    GOODBYE_REPLY,
    GREETING_REPLY,
    THANKS_REPLY,
    needs_detail,
    small_talk_reply,
)


@pytest.mark.parametrize(
    "message, reply",
    [
        ("hi", GREETING_REPLY),
        ("Hello there \U0001f44b", GREETING_REPLY),
        ("good morning team!", GREETING_REPLY),
        ("hi again", GREETING_REPLY),
        ("hello there again :)", GREETING_REPLY),
        ("hello, can you help me?", GREETING_REPLY),
        ("is anyone there?", GREETING_REPLY),
        ("thanks!", THANKS_REPLY),
        ("Thank you so much for your help!", THANKS_REPLY),
        ("ok thanks", THANKS_REPLY),
        ("hi, thanks", THANKS_REPLY),
        ("cool thanks \U0001f642", THANKS_REPLY),
        ("thank\u2019s a lot", None),  # not a phrase it knows: answered as a question
        ("ok", ACK_REPLY),
        ("great, that worked", ACK_REPLY),
        ("\U0001f44d", ACK_REPLY),
        ("ok, thanks, bye", GOODBYE_REPLY),
        ("no thanks", GOODBYE_REPLY),
        ("that's all", GOODBYE_REPLY),
        ("I\u2019m good", GOODBYE_REPLY),
        ("hello? anyone?", GREETING_REPLY),
        ("anyone there?", GREETING_REPLY),
        ("help", GREETING_REPLY),
        ("hola", GREETING_REPLY),
        ("guten Tag", GREETING_REPLY),
        ("merci beaucoup", THANKS_REPLY),
        ("\u0441\u043f\u0430\u0441\u0438\u0431\u043e", THANKS_REPLY),  # Russian thanks
        ("sounds good", ACK_REPLY),
        ("good night", GOODBYE_REPLY),
        ("cheers mate", THANKS_REPLY),
        ("sup", GREETING_REPLY),
        ("kthxbye", GOODBYE_REPLY),
        ("Bonjour, j’ai besoin d’aide", GREETING_REPLY),
    ],
)
def test_small_talk_gets_a_reply_in_kind(message, reply):
    assert small_talk_reply(message) == reply


@pytest.mark.parametrize(
    "last_answer, reply",
    [
        ("", GOODBYE_REPLY),
        (THANKS_REPLY, GOODBYE_REPLY),
        (f"I couldn't find that. {HANDOFF_OFFER}", GOODBYE_REPLY),
        ("Unplug the hub. Is the light blinking?", None),  # the answer's own question
    ],
)
def test_a_plain_no_is_a_goodbye_only_to_the_bots_own_questions(last_answer, reply):
    assert small_talk_reply("no", last_answer) == reply
    assert small_talk_reply("nope", last_answer) == reply
    assert small_talk_reply("please don't", last_answer) == reply
    assert small_talk_reply("please dont", last_answer) == reply


@pytest.mark.parametrize(
    "message", ["no, please don't connect me", "no need for a person", "I don't need a human"]
)
def test_turning_down_the_offer_of_a_person_is_a_goodbye(message):
    assert small_talk_reply(message, f"I couldn't find that. {HANDOFF_OFFER}") == GOODBYE_REPLY


@pytest.mark.parametrize(
    "message, reply",
    [
        ("great, it works now!", ACK_REPLY),
        ("all sorted now", ACK_REPLY),
        ("ok it works", ACK_REPLY),
        ("that did the trick", ACK_REPLY),
        ("thanks, that fixed it!", THANKS_REPLY),
        ("it worked, thank you", THANKS_REPLY),
        # Still a problem, or a question: searched.
        ("it works on desktop but not on my phone", None),
        ("fixed?", None),
    ],
)
def test_saying_that_it_works_now_is_an_acknowledgement(message, reply):
    assert small_talk_reply(message, "Hold the reset button for 10 seconds [1].") == reply


@pytest.mark.parametrize(
    "message",
    ["no I dont want a person", "no, I do not want to talk to a person", "I don't need a human"],
)
@pytest.mark.parametrize(
    "last_answer", ["", "Hi! What can I help you with?", "Unplug the hub. Is the light blinking?"]
)
def test_not_wanting_a_person_is_a_goodbye_whatever_the_bot_asked(message, last_answer):
    assert small_talk_reply(message, last_answer) == GOODBYE_REPLY


def test_a_no_with_a_goodbye_is_a_goodbye_after_any_answer():
    assert small_talk_reply("no thanks, bye", "Hold the button for 10 s.") == GOODBYE_REPLY


def test_a_no_thanks_turns_down_an_answer_that_asked_nothing():
    assert small_talk_reply("no thanks", "Hold the button for 10 s.") == GOODBYE_REPLY
    assert small_talk_reply("no thank you", "Hold the button for 10 s.") == GOODBYE_REPLY
    assert small_talk_reply("no, thanks", "Hold the button for 10 s.") == GOODBYE_REPLY
    # A "?" in a web address or before the last sentence asks nothing.
    linked = "See https://example.com/help?topic=reset for the steps [1]."
    assert small_talk_reply("no thanks", linked) == GOODBYE_REPLY
    assert small_talk_reply("no thanks", "Did it work? If not, hold Reset.") == GOODBYE_REPLY
    # The answer's own question it may answer: searched with the conversation, not a goodbye.
    for message in ("no thanks", "no, thanks", "no, thank you", "nope, thanks"):
        assert small_talk_reply(message, "Unplug the hub. Is the light blinking? [1]") is None
    assert small_talk_reply("no", "Hold the button for 10 s.") is None


@pytest.mark.parametrize(
    "message",
    [
        "hi, how do i reset my hub?",
        "how do i say thanks in french",
        "hello world app keeps crashing",
        "I have a question about billing",
        "thanks but it still does not work",
        "no, i mean the phone app",
        "yes",
        "talk to a person",
        "ok " * 40,  # long: not small talk, whatever it says
        "",
        "that's it?",  # a question mark makes a question, unless it only greets
        "ok and?",
        "no?",
        "hola, mi hub no funciona",
        "danke, aber es geht nicht",
        "\U0001f44e",  # a thumbs-down or an angry face is no nod
        "\U0001f621",
        "???",
    ],
)
def test_a_message_with_anything_more_is_not_small_talk(message):
    assert small_talk_reply(message) is None


@pytest.mark.parametrize(
    "message",
    [
        "why?",
        "it doesn't work",
        "It doesn\u2019t work anymore!!",
        "I found a bug",
        "error",
        "help, stuck",
        # No word at all: an emoji that is not a nod, punctuation.
        "\U0001f621",
        "\U0001f44e",
        "???",
    ],
)
def test_a_message_that_names_no_topic_needs_details(message):
    assert needs_detail(message)


@pytest.mark.parametrize(
    "message",
    [
        "login doesn't work",
        "the app crashes",
        "my account",
        "no funciona",  # another language: searched as it is
        "2fa error 403",
        "error 404",  # a number names something to search for
    ],
)
def test_a_message_with_a_topic_does_not_need_details(message):
    assert not needs_detail(message)
