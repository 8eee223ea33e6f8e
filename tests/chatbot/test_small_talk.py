"""Greetings, thanks and goodbyes get a reply in kind; anything with a question in it does not."""

from __future__ import annotations

import pytest

from chatbot.small_talk import (
    ACK_REPLY,
    GOODBYE_REPLY,
    GREETING_REPLY,
    THANKS_REPLY,
    small_talk_reply,
)


@pytest.mark.parametrize(
    "message, reply",
    [
        ("hi", GREETING_REPLY),
        ("Hello there \U0001f44b", GREETING_REPLY),
        ("good morning team!", GREETING_REPLY),
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
    ],
)
def test_small_talk_gets_a_reply_in_kind(message, reply):
    assert small_talk_reply(message) == reply


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
    ],
)
def test_a_message_with_anything_more_is_not_small_talk(message):
    assert small_talk_reply(message) is None
