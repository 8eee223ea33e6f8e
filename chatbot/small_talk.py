"""Greetings, thanks and goodbyes: answered at once, without a search or a model call.

A customer who writes "hi" or "thanks!" wants a short reply, not a search of the help center,
which finds nothing for such a message: the bot would say it has no answer, and with
``handoff.on_no_answer`` open a ticket for a greeting. A model call would cost a second or more
for the same few words. Only a message made of nothing but such phrases counts: "hi, how do I
reset my hub?" is a question and is answered as one.
"""

from __future__ import annotations

import re

GREETING_REPLY = "Hi! What can I help you with?"
THANKS_REPLY = "You're welcome! Is there anything else I can help with?"
ACK_REPLY = "Is there anything else I can help with?"
GOODBYE_REPLY = "All right. If anything else comes up, just write here."

_GREETING = (
    r"(?:hi+|hello+|hey+|hiya|howdy|greetings|good (?:morning|afternoon|evening|day)|yo)"
    r"(?: there| all| team| everyone| folks| guys)?"
    r"|(?:can|could) (?:you|someone|anyone|somebody) help(?: me)?(?: please| out)?"
    r"|i (?:need|could use) (?:some )?help|i have (?:a|some) questions?"
    r"|(?:is )?(?:any(?:one|body)|some(?:one|body)) (?:there|here|around)"
)
_THANKS = (
    r"(?:many |big )?(?:thanks|thank you|thank u|thx|ty|cheers|much appreciated|appreciate it)"
    r"(?: (?:so|very) much| a lot| a bunch| again| anyway)?(?: for (?:the|your|all the) help)?"
)
_ACK = (
    r"ok(?:ay)?|k|great|perfect|awesome|cool|nice|brilliant|excellent|got it|understood"
    r"|(?:that|this) (?:helps|helped|worked|works|is (?:great|perfect|helpful))|makes sense"
)
_GOODBYE = (
    r"bye(?: bye)?|goodbye|see (?:you|ya)|have a (?:good|nice|great) (?:day|one|evening)"
    r"|no(?:pe)?(?: thanks?(?: you)?)?|(?:that's|that is) (?:all|it)|nothing else"
    r"|(?:i'm|im|i am) (?:good|fine|all set)|all good"
)
_KINDS = [
    ("goodbye", re.compile(rf"(?:{_GOODBYE})")),
    ("thanks", re.compile(rf"(?:{_THANKS})")),
    ("greeting", re.compile(rf"(?:{_GREETING})")),
    ("ack", re.compile(rf"(?:{_ACK})")),
]
_REPLIES = {
    "goodbye": GOODBYE_REPLY,
    "thanks": THANKS_REPLY,
    "greeting": GREETING_REPLY,
    "ack": ACK_REPLY,
}
# Between phrases: punctuation, emoji and other symbols, and joining words ("ok, thanks!").
_SEPARATORS = re.compile(r"(?:[^\w'\s]|_)+|\b(?:and|but)\b")
MAX_CHARS = 80


def small_talk_reply(message: str) -> str | None:
    """The reply to a message that is only greetings, thanks, acknowledgements or a goodbye;
    None for anything else. Of several kinds, the last word wins: a goodbye, then thanks, then a
    greeting, then an acknowledgement ("hi, thanks!" is thanked)."""
    text = message.strip().lower().replace("\u2019", "'")
    if not text or len(text) > MAX_CHARS:
        return None
    phrases = [" ".join(p.split()) for p in _SEPARATORS.split(text) if p and p.strip()]
    if not phrases:
        return ACK_REPLY  # only emoji or punctuation: a thumbs-up, a smile
    found = set()
    for phrase in phrases:
        kind = next((k for k, pattern in _KINDS if pattern.fullmatch(phrase)), None)
        if kind is None:
            kind = _several(phrase)
        if kind is None:
            return None
        found |= kind if isinstance(kind, set) else {kind}
    return next(_REPLIES[k] for k, _ in _KINDS if k in found)


def _several(phrase: str) -> set[str] | None:
    """The kinds of a phrase made of two or three of them without punctuation between
    ("ok thanks", "hi there can you help me", "thanks bye")."""
    words = phrase.split()
    for cut in range(1, len(words)):
        head, tail = " ".join(words[:cut]), " ".join(words[cut:])
        first = next((k for k, pattern in _KINDS if pattern.fullmatch(head)), None)
        if first is None:
            continue
        rest = next((k for k, pattern in _KINDS if pattern.fullmatch(tail)), None)
        if rest is not None:
            return {first, rest}
        more = _several(tail)
        if more is not None:
            return {first} | more
    return None
