"""Greetings, thanks and goodbyes: answered at once, without a search or a model call.

A customer who writes "hi" or "thanks!" wants a short reply, not a search of the help center,
which finds nothing for such a message: the bot would say it has no answer, and with
``handoff.on_no_answer`` open a ticket for a greeting. A model call would cost a second or more
for the same few words. Only a message made of nothing but such phrases counts: "hi, how do I
reset my hub?" is a question and is answered as one.
"""

from __future__ import annotations

import re

from chatbot.prompts import HANDOFF_OFFER
from knowledge.retriever import COMMON_WORDS

GREETING_REPLY = "Hi! What can I help you with?"
THANKS_REPLY = "You're welcome! Is there anything else I can help with?"
ACK_REPLY = "Is there anything else I can help with?"
GOODBYE_REPLY = "All right. If anything else comes up, just write here."
DETAIL_REPLY = (
    "Could you tell me a bit more? For example, what you were trying to do and what happened."
)

# English first, then the commonest greetings and thanks of a few other languages: a "hola" or
# a "merci" must not reach the search (which finds nothing, and may open a ticket).
_GREETING = (
    r"(?:hi+|hello+|hey+|hiya|howdy|greetings|good (?:morning|afternoon|evening|day)|yo)"
    r"(?: there| all| team| everyone| folks| guys)?(?: again)?"
    r"|(?:can|could) (?:you|someone|anyone|somebody) help(?: me)?(?: please| out)?"
    r"|(?:please )?help(?: me)?(?: please)?"
    r"|i (?:need|could use) (?:some )?help|i have (?:a|some) questions?"
    r"|(?:is )?(?:any(?:one|body)|some(?:one|body))(?: (?:there|here|around))?"
    r"|sup|wassup|(?:what's|whats) up"
    # "I need help" in a few other languages
    r"|j'ai besoin d'aide|necesito ayuda|ich brauche hilfe|preciso de ajuda|ho bisogno di aiuto"
    r"|hola|buen(?:os|as) (?:días|dias|tardes|noches)|buenas|bonjour|bonsoir|salut|hallo"
    r"|guten (?:tag|morgen|abend)|servus|moin|ciao|buongiorno|olá|ola|oi|bom dia|hej|hoi"
    r"|привет|здравствуйте|你好|您好|こんにちは|안녕하세요|merhaba|namaste"
)
_THANKS = (
    r"(?:many |big )?(?:thanks|thank you|thank u|thx|ty|cheers|much appreciated|appreciate it)"
    r"(?: (?:so|very) much| a lot| a bunch| again| anyway)?(?: for (?:the|your|all the) help)?"
    r"(?: mate| man| guys| buddy| pal)?|ta"
    r"|merci(?: beaucoup| bien)?|danke(?: schön| schon| sehr)?|vielen dank|(?:muchas )?gracias"
    r"|grazie(?: mille)?|obrigad[oa]|dank je(?: wel)?|bedankt|tack(?: så mycket)?|спасибо"
    r"|谢谢|ありがとう(?:ございます)?|감사합니다|teşekkürler|dziękuję"
)
_ACK = (
    r"ok(?:ay)?|k|alright|all right|great|perfect|awesome|cool|nice|brilliant|excellent"
    r"|got it|understood|sounds good|(?:that|this) (?:helps|helped|worked|works"
    r"|is (?:great|perfect|helpful))|makes sense"
    # It works now: "great, it works now!", "that fixed it", "all sorted".
    r"|(?:(?:it|that|this) (?:works|worked|fixed it|did it|did the trick|solved it|sorted it)"
    r"|(?:it's|its|it is|everything's|everything is|all) (?:working|fixed|sorted|solved)"
    r"|works|working|fixed|sorted|solved|problem solved)(?: now)?"
)
_GOODBYE = (
    r"bye(?: bye)?|goodbye|see (?:you|ya)|have a (?:good|nice|great) (?:day|one|evening)"
    r"|good night|(?:that's|that is) (?:all|it)|nothing else|(?:i'm|im|i am) (?:good|fine|all set)"
    r"|all good|adiós|adios|au revoir|tschüss|tschüs|arrivederci|tchau|до свидания"
    r"|kthxbye|kthx|later|laters|cya|ttyl|take care"
)
# A plain no: a goodbye when the bot's last answer asked nothing else (its "anything else?",
# its offer of a person, or no answer yet); after any other answer it answers that answer's
# question ("Is the light blinking?"). Turning down the offer of a person in other words
# ("please don't", "no need for a person") counts as a no too.
_NO = (
    r"no(?:pe)?|nah|no,? thanks?(?: you)?|not now|(?:please )?(?:don't|dont|do not)"
    r"(?: connect me)?(?: please)?|no need"
)
# Not wanting a person, said whatever the bot asked last: "I don't need a human", "no, I do
# not want to talk to a person".
_NO_PERSON = (
    r"(?:i )?(?:don't|dont|do not) (?:really )?(?:need|want)(?: to (?:talk|speak|chat) (?:to|with))?"
    r" (?:a |an |any )?(?:person|human|agent|someone|anyone)(?: (?:thanks|please))?"
    r"|no need (?:for|of) (?:a |an )?(?:person|human|agent)"
)
_KINDS = [
    ("no_person", re.compile(rf"(?:{_NO_PERSON})")),
    ("no", re.compile(rf"(?:{_NO})")),
    ("goodbye", re.compile(rf"(?:{_GOODBYE})")),
    ("thanks", re.compile(rf"(?:{_THANKS})")),
    ("greeting", re.compile(rf"(?:{_GREETING})")),
    ("ack", re.compile(rf"(?:{_ACK})")),
]
_REPLIES = {
    "no_person": GOODBYE_REPLY,
    "no": GOODBYE_REPLY,
    "goodbye": GOODBYE_REPLY,
    "thanks": THANKS_REPLY,
    "greeting": GREETING_REPLY,
    "ack": ACK_REPLY,
}
# Between phrases: punctuation, emoji and other symbols, and joining words ("ok, thanks!").
_SEPARATORS = re.compile(r"(?:[^\w'\s]|_)+|\b(?:and|but)\b")
# A message of only these (and spaces, punctuation other than "?") is a nod: 👍 🙂 🙏 👌 ✅ ❤️.
_NODS = frozenset(
    "\U0001f44d\U0001f642\U0001f60a\U0001f600\U0001f603\U0001f604\U0001f64f"
    "\U0001f44c\u2705\u2764\U0001f44f\U0001f389\u263a\ufe0f\u200d"
)
# The bot's own questions a plain no can answer.
_ANSWERED_BY_NO = (HANDOFF_OFFER, "anything else I can help with?")
MAX_CHARS = 80
# The replies above: a conversation with only these has had no answer yet.
SMALL_TALK_REPLIES = frozenset(_REPLIES.values())


def small_talk_reply(message: str, last_answer: str = "") -> str | None:
    """The reply to a message that is only greetings, thanks, acknowledgements or a goodbye;
    None for anything else. ``last_answer`` is the bot's previous answer, if any.

    A question mark makes a message a question unless it only greets ("hello?", "anyone
    there?"). Of several kinds, the last word wins: a goodbye, then thanks, then a greeting,
    then an acknowledgement ("hi, thanks!" is thanked).
    """
    text = message.strip().lower().replace("\u2019", "'")
    if not text or len(text) > MAX_CHARS:
        return None
    phrases = [" ".join(p.split()) for p in _SEPARATORS.split(text) if p and p.strip()]
    if not phrases:  # only emoji or punctuation
        nod = "?" not in text and all(c in _NODS or not c.isalnum() and c in " .!," for c in text)
        return ACK_REPLY if nod and any(c in _NODS for c in text) else None
    found = set()
    for phrase in phrases:
        kind = next((k for k, pattern in _KINDS if pattern.fullmatch(phrase)), None)
        if kind is None:
            kind = _several(phrase)
        if kind is None:
            return None
        found |= kind if isinstance(kind, set) else {kind}
    if "?" in text and found != {"greeting"}:
        return None  # "that's it?", "ok and?": a question
    if "no" in found and found <= {"no", "thanks"}:
        asked_nothing = not last_answer.strip() or last_answer.rstrip().endswith(_ANSWERED_BY_NO)
        # "no thanks" turns down what an answer offers, unless the answer ends with a question.
        polite = "thank" in text and not _ends_with_question(last_answer)
        if not (asked_nothing or polite):
            return None  # a no that answers the answer's own question ("no thanks, bye" is not)
    return next(_REPLIES[k] for k, _ in _KINDS if k in found)


# Web addresses and citation marks, which may hold or follow a "?" that asks nothing.
_NOT_PROSE = re.compile(r"https?://\S+|\[\d+\]")


def _ends_with_question(answer: str) -> bool:
    """Whether an answer's last sentence is a question ("… Is the light blinking?")."""
    return _NOT_PROSE.sub("", answer).rstrip().endswith("?")


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


# Words that say something is wrong without saying what: a message of only these and common
# words ("why?", "it doesn't work", "I found a bug", "error") names no topic to search for.
_VAGUE_WORDS_TEXT = """
    a i again anymore awful bad broke broken bug bugs cannot cant confused confusing does
    doesnt dont error errors fail failed failing fails find found fix fixed happen happened
    happening happens has issue issues keep keeps odd problem problems question questions seeing
    stop stopped strange stuck trouble weird why wont work worked working works wrong
"""
_VAGUE_WORDS = frozenset(_VAGUE_WORDS_TEXT.split())
# Words and numbers: "error 404" names something to search for.
_WORDS = re.compile(r"[^\W_]+")
# What is left of "doesn't", "I'm", "it's" once the apostrophe splits them.
_CONTRACTIONS = frozenset({"t", "s", "m", "re", "ve", "ll", "d"})


def needs_detail(message: str) -> bool:
    """Whether a message names no topic at all: only common words and words that something is
    wrong ("it doesn't work", "why?", "help, error"). Sent before the bot has answered
    anything, such a message is answered by asking what the customer was doing (see the
    service), not handed off."""
    # No word at all ("👎", "???", "..."): nothing to search for either.
    words = _WORDS.findall(message.lower().replace("\u2019", "'"))
    return all(w in COMMON_WORDS or w in _VAGUE_WORDS or w in _CONTRACTIONS for w in words)
