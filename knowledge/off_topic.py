"""Examples of questions a help center should not answer, and how close a question comes to them.

A question that is more like one of these examples than like any document (another company's
app, someone's bank, a joke request) is better handed to a person than answered from the
nearest article, which would be about something else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from knowledge.vectors import unit_rows

log = logging.getLogger(__name__)

BUNDLED_EXAMPLES = Path(__file__).resolve().parent / "off_topic_examples.txt"
BUNDLED_PRODUCTS = Path(__file__).resolve().parent / "other_products.txt"
BUNDLED_COMPLIANCE = Path(__file__).resolve().parent / "compliance_names.txt"
# Embedded beside the examples, so that a cache made by another model is recognised.
CACHE_PROBE = "a fixed sentence that tells whether cached vectors came from this model"
CACHE_PROBE_MIN_COSINE = 0.9999
# A temporary cache file older than this was left by a process that died while writing it.
STALE_TEMPORARY_S = 3600
_WORD_RE = re.compile(r"\w+")
# Where a product name may start: not inside a word, nor after an apostrophe ("doesn't").
_START = r"(?<!\w)(?<!\w['\u2019])"


# A question asks about another product itself when the product is where it happens ("mute a
# channel in Slack") or whose account, plan or bill it is ("cancel my Slack plan"), unless it
# also says how that product meets this one: an import, an integration, signing in with it, a
# comparison, or things that were there before ("we had 40 channels in Slack").
_POSSESSIVE = r"(?:my|our|your|their)"
_THINGS_OWNED = (
    r"(?:accounts?|plans?|subscriptions?|seats?|licen[cs]es?|invoices?|bills?|billing|trials?|"
    r"passwords?|repos?|repositor(?:y|ies)|recordings?)"
)
_DETERMINER = r"(?:a|an|the|my|our|your|their)"
_RELATION_WORDS = re.compile(
    r"\b(?:import\w*|export\w*|migrat\w*|integrat\w*|webhooks?|bots?|api|sync\w*|bridg\w*|"
    r"mirror\w*|connect\w*|(?:log|sign)(?:s|ged|ging|ing)?[\s-]?(?:in|on|up)|login|signin|"
    r"signup|sso|register\w*|authenticat\w*|equivalent|similar|instead|alternatives?|"
    r"compared?|vs|versus|here|used to|switch\w*|move|moving|the same|same as|something like|"
    r"come (?:across|over)|bring|carry|transfer\w*|keep|had|were|was|old|previous\w*|"
    r"existing|show up|appear\w*|forward\w*|post(?:ed|s)?|url|token|paste|link\w*)\b",
    re.IGNORECASE,
)
# "log in with my GitHub account", "moving off Slack", "star messages as you can in Slack":
# one of the three words before the product says it is not the place of the question.
_NOT_A_PLACE_BEFORE = frozenset(
    ["with", "from", "to", "into", "via", "use", "using", "through", "like", "than", "unlike"]
    + ["as", "off"]
)
_WORDS_LOOKED_BACK = 3


class OffTopicExamplesError(ValueError):
    """The examples file cannot be used."""


@dataclass(frozen=True)
class OffTopicMatch:
    """The example closest to a question, and its cosine similarity to the question.

    ``document_similarity`` is the best chunk's similarity to the same question, the one the
    example's is compared with (the retriever fills it in).
    """

    example: str
    similarity: float
    document_similarity: float | None = None
    # The product's own names left out of the question for the comparison, if any.
    without: tuple[str, ...] = ()
    # The question's words that no document uses (the service fills them in).
    unknown_words: tuple[str, ...] = ()

    @property
    def lead(self) -> float:
        """How much closer the question is to the example than to the documents."""
        return self.similarity - (self.document_similarity or 0.0)


def read_examples(path: Path) -> list[str]:
    """One question per line; blank lines and lines starting with # are skipped."""
    return _read_lines(path, "off-topic examples")


def read_product_names(path: Path) -> list[str]:
    """One product or company name per line; blank lines and lines starting with # are skipped."""
    return _read_lines(path, "product names")


def read_compliance_names(path: Path) -> list[str]:
    """One regulation, standard or certification per line ("hipaa", "soc 2 | soc2")."""
    return _read_lines(path, "compliance names")


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OffTopicExamplesError(f"cannot read {what} {path}: {exc}") from exc
    lines = [line.strip() for line in text.splitlines()]
    lines = list(dict.fromkeys(e for e in lines if e and not e.startswith("#")))
    if not lines:
        raise OffTopicExamplesError(f"{path} holds no {what}")
    return lines


class OtherProducts:
    """Names of other companies' products ("linkedin", "microsoft teams | ms teams").

    A question that names one of them while no document of the help center mentions it is about
    that product, not about anything the help center covers: a help center that does mention it
    (an import from Slack, a sign-in with GitHub) answers such questions as usual. An embedding
    hardly tells "my profile photo on linkedin" from "my profile photo"; the name does. A line
    may give one product several names, separated by "|": the first is the one reported, and a
    document that uses any of them mentions the product.

    The same matching serves for the names of regulations and certifications (HIPAA, SOC 2):
    ``named_in`` and ``not_mentioned`` work for any list of names.
    """

    def __init__(self, names: Sequence[str]):
        products: dict[str, list[str]] = {}
        for line in names:
            spellings = [" ".join(n.lower().split()) for n in line.split("|")]
            spellings = [n for n in spellings if re.search(r"\w", n)]
            if spellings:
                products.setdefault(spellings[0], []).extend(spellings)
        if not products:
            raise OffTopicExamplesError("no product names given")
        self.names = list(products)
        self._spellings = {name: list(dict.fromkeys(s)) for name, s in products.items()}
        # One group per spelling, longest first, so that "google workspace" is found whole and
        # each match is told by its group, not by its text (whose case may fold differently).
        spellings = sorted(
            ((s, name) for name, all_ in self._spellings.items() for s in all_),
            key=lambda pair: len(pair[0]),
            reverse=True,
        )
        self._group_names = {f"p{i}": name for i, (_, name) in enumerate(spellings)}
        body = "|".join(f"(?P<p{i}>{_spelling(s)})" for i, (s, _) in enumerate(spellings))
        self._pattern = re.compile(rf"{_START}(?:{body})(?!\w)", re.IGNORECASE)
        # Each product's names as one alternation, for the patterns that look for one product.
        self._any_name = {
            name: "|".join(map(_spelling, all_)) for name, all_ in self._spellings.items()
        }
        self._each = {
            name: re.compile(rf"{_START}(?:{names})(?!\w)", re.IGNORECASE)
            for name, names in self._any_name.items()
        }

    @classmethod
    def from_file(cls, path: Path) -> OtherProducts:
        return cls(read_product_names(path))

    def named_in(self, text: str) -> list[str]:
        """The products ``text`` names (by their first names), in order, each once."""
        found = (self._group_names[m.lastgroup or ""] for m in self._pattern.finditer(text))
        return list(dict.fromkeys(found))

    def asked_about(
        self, text: str, names: Iterable[str], own_names: Iterable[str] = ()
    ) -> list[str]:
        """The products of ``names`` that ``text`` asks about for themselves.

        "how do i mute a channel in slack", "cancel my slack pro plan": the product is where the
        question happens, or its account, plan or bill is the subject. Not "we're moving from
        slack", "log in with my github account", "we had 40 channels in slack, will they come
        across?": those ask how it meets the help center's own product, which its documents
        answer. A question that names the help center's own product (``own_names``) is not
        taken to happen in another one ("how do i get zulip notifications in slack"); its
        account or plan still is the other product's.
        """
        if _RELATION_WORDS.search(text):
            return []
        lowered = text.lower()
        words = set(_WORD_RE.findall(lowered))
        names_own = any(n in words for n in own_names)
        found = []
        for name in names:
            names_of = self._any_name.get(name)
            if not names_of:
                continue
            product = rf"(?:{names_of})(?![\w-])"
            patterns = [
                rf"{_START}{_POSSESSIVE}\s+(?:[\w.]+\s+)?{product}\s+(?:[\w.]+\s+){{0,2}}?"
                rf"{_THINGS_OWNED}(?!\w)"
            ]
            if not names_own:
                patterns.append(rf"{_START}(?:in|inside|within)\s+(?:{_DETERMINER}\s+)?{product}")
            if any(_as_place(lowered, pattern) for pattern in patterns):
                found.append(name)
        return found

    def not_mentioned(self, texts: Iterable[str]) -> frozenset[str]:
        """The products that none of ``texts`` (a help center's chunks) names."""
        lowered = [text.lower() for text in texts]
        words: set[str] = set()
        for text in lowered:
            words.update(_WORD_RE.findall(text))
        # Only a product one of whose names has every word somewhere, or all of them run
        # together ("applewatch"), is looked for.
        candidates = [
            name
            for name, all_ in self._spellings.items()
            if any(_could_be_in(_WORD_RE.findall(s), words) for s in all_)
        ]
        mentioned = {n for n in candidates if any(self._each[n].search(t) for t in lowered)}
        return frozenset(self.names) - mentioned


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A question asks for a compliance claim when the regulation or certification is the vendor's:
# "is zulip HIPAA compliant?", "send us your SOC 2 report", "do you sign a BAA?", "HIPAA
# compliant?". Not when it is the customer's own reason for a how-to: "our HIPAA policy says old
# messages must go, how do i set that up?", "we have to be HIPAA compliant, so how do i ...?".
# The rule reads one clause at a time (split at sentence ends, question marks, colons,
# semicolons, commas, dashes, brackets, and "and"/"or"/"but" before a new question), so a
# "your" or a "we" in another clause does not count.
_CLAUSE_END = re.compile(
    r"[.!;:,]+(?=\s|$)|\?+|\s[-\u2013\u2014]+\s|[()]"
    r"|\s(?:and|or|but)\s(?=(?:is|are|does|do|can|could|will|would|has|have)\b)"
)
_FIRST_PERSON = _words(
    "i me my mine myself we us our ours ourselves i'm im i've ive i'd we're were we've weve "
    "we'd we'll"
)
_AUXILIARIES = _words(
    "is are does do has have can could will would did was were isn't aren't doesn't don't "
    "hasn't haven't won't wasn't weren't r"
)
# Who "you" may be: the vendor, in words customers use ("you guys", "y'all", "r u").
_VENDOR_WORDS = _words("you u ya yall y'all it they you're youre")
# Words after the vendor that are still the vendor ("Zulip Cloud", "you guys", "the mobile app").
_VENDOR_TAIL = _words(
    "cloud guys all folks team app apps product service platform software company hosting "
    "servers server infrastructure mobile desktop web"
)
# After "is it", these make "it" a dummy subject: "is it possible to meet HIPAA rules with ...".
_DUMMY_IT_NEXT = _words(
    "possible ok okay safe allowed necessary required enough true hard easy worth normal common "
    "better best recommended advisable legal wise smart fine"
)
# Words that say a standing when the name follows "for", "under" or "per": "is Zulip approved
# for HIPAA?" (not "does Zulip support SAML for SOC 2?", a feature for the customer's purpose).
_STANDING_WORDS = _words(
    "approved suitable certified compliant ready eligible authorized authorised validated "
    "audited assessed accredited safe ok okay good fit appropriate usable covered sufficient "
    "adequate designed built attested used"
)
# Joiners in a list of names, not counted between the vendor and a name.
_JOINERS = _words("and or nor like such as e.g. eg including incl plus")
# Words besides the names that a bare question about them may hold: "HIPAA compliant?", "and
# SOC 2?", "what about FedRAMP?".
_FRAGMENT_WORDS = _words(
    "and or also what about how so too then plus type i ii iii 1 2 3 level moderate high low "
    "compliant compliance certified certification certificate attested attestation report "
    "authorized authorised authorization authorisation accredited approved ready validated "
    "audited status any update on re regarding yet now"
)
# Names that are documents the vendor signs, fills in or gives out: "will you sign our BAA?"
# asks for the vendor's signature, however much the BAA is the customer's.
_DOCUMENT_NAMES = frozenset(["baa", "vpat", "hecvat", "dpa", "security questionnaire"])
_DOCUMENT_AFTER_NAME = re.compile(
    r"^\s*(?:[\w.-]+\s+){0,2}?(?:reports?|certificates?|attestations?|letters?|agreements?|"
    r"addend(?:um|a)|summary|summaries|results)\b"
)
_REQUEST_VERBS = re.compile(
    r"\b(?:send|share|provide|give|forward|attach|email|e-mail|get|download|obtain|request|see|"
    r"view|receive)\b"
)
_COPY_OF = re.compile(
    r"\b(?:proof|evidence|cop(?:y|ies)|confirmation)\s+of\s+(?:(?:the|your|a|an)\s+)?"
    r"(?:[\w-]+\s+)?$"
)
_CUSTOMER_OWNED = _words("our my their for")
_VENDOR_GAP_WORDS = 4
_WORD = re.compile(r"[\w'\u2019]+(?:[-.][\w]+)*")


class ComplianceNames(OtherProducts):
    """Names of regulations and certifications ("hipaa", "soc 2 | soc2"), and whether a
    question asks about the vendor's standing on one (see ``claimed``)."""

    @classmethod
    def from_file(cls, path: Path) -> ComplianceNames:
        return cls(read_compliance_names(path))

    def claimed(self, text: str, names: Iterable[str], own_names: Iterable[str] = ()) -> list[str]:
        """The names of ``names`` that ``text`` asks the vendor's standing on.

        Read one clause at a time; a clause asks about the vendor's standing on a name in it
        (any of its mentions) when one of these holds:

        - "your", or the product's own name with 's, comes just before the name ("send us your
          SOC 2 Type II report", "what is Zulip's HIPAA stance?"), in a clause that does not
          open with "how";
        - the vendor is asked or spoken of: "is", "does", "can", "will" ... and then "you",
          "it", the product's own name or "the app" ("does Zulip Cloud meet PIPEDA?", "so is
          Zulip HIPAA compliant?"), or the vendor and then "is" or "are" ("Zulip is SOC 2
          certified?", "whether Zulip Cloud is HIPAA compliant"), with the name at most four
          words later (other names, "and" and "or" aside), no "we", "our" or "I" between, and,
          when "for", "under" or "per" comes just before the name, a word of standing between
          ("approved for HIPAA", not "support SAML for SOC 2");
        - it opens with "what" or "which", and the vendor is asked just after the name ("what
          uptime SLA does Zulip Cloud guarantee?"), or with "is there" and the name follows
          ("is there a BAA for Zulip Cloud?");
        - it is a bare question about names ("HIPAA compliant?", "what about CCPA and LGPD?");
        - it asks for the vendor's document: "proof of" or "a copy of" before the name, or,
          after a verb such as send, share, get or download, a BAA or VPAT, or the name with
          "report", "certificate" and the like just after it, with no "for", "our" or "my"
          just before it, in a clause that does not open with "how".
        """
        own = [n.lower() for n in own_names]
        wanted = [n for n in names if n in self._each]
        if not wanted:
            return []
        found: set[str] = set()
        lowered = text.lower().replace("\u2019", "'")
        pieces = _CLAUSE_END.split(lowered)
        ends = [m.group(0) for m in _CLAUSE_END.finditer(lowered)]
        for index, clause in enumerate(pieces):
            asks = "?" in (ends[index] if index < len(ends) else "")
            unnamed = self._pattern.sub(" ", clause)
            for name in wanted:
                if name in found:
                    continue
                for match in self._each[name].finditer(clause):
                    # The words before this mention, without any name of the list.
                    before = _WORD.findall(self._pattern.sub(" ", clause[: match.start()]))
                    if _claims(clause, before, unnamed, match, name, own, asks):
                        found.add(name)
                        break
        return [n for n in wanted if n in found]


def _claims(
    clause: str,
    before: list[str],
    unnamed: str,
    match: re.Match,
    name: str,
    own: list[str],
    asks: bool,
) -> bool:
    """Whether ``clause`` asks the vendor's standing on the name ``match`` found in it.

    ``before``: the clause's words before the name, without names of the list; ``unnamed``:
    the clause without any name of the list."""
    opens_how = before[:1] == ["how"]
    # "your SOC 2 report", "Zulip's HIPAA stance", "Zulip Cloud's SOC 2 report"
    near = before[-3:]
    possessive = any(
        w == "your" or (w.endswith("'s") and (w[:-2] in own or (i > 0 and near[i - 1] in own)))
        for i, w in enumerate(near)
    )
    if possessive and not opens_how:
        return True
    if _vendor_asked(before, own, document=name in _DOCUMENT_NAMES):
        return True
    if before[:1] in (["what"], ["which"], ["whats"], ["what's"]) and len(before) <= 3:
        after = _WORD.findall(clause[match.end() :])
        for at, word in enumerate(after[:3]):
            if (
                word in _AUXILIARIES
                and at + 1 < len(after)
                and _is_vendor(after[at + 1], own)
                and (after[at + 1] != "the" or _the_vendor(after[at + 2 : at + 5], own))
            ):
                return True
    if before[:2] == ["is", "there"] and len(before) <= 3:
        return True
    # "HIPAA compliant?", "CCPA and LGPD?", "what about FedRAMP?", "Zulip HIPAA?"
    words = _WORD.findall(unnamed)
    fragment = _FRAGMENT_WORDS | _VENDOR_TAIL | {"for", *own}
    if asks and all(w in fragment for w in words):
        return True
    # "we need proof of SOC 2 compliance", "a copy of the SOC 2 Type II"
    if _COPY_OF.search(clause[: match.start()]):
        return True
    # "can we get the SOC 2 report?", "where can i download the VPAT?"
    if opens_how or not _REQUEST_VERBS.search(clause[: match.start()]):
        return False
    document = name in _DOCUMENT_NAMES or _DOCUMENT_AFTER_NAME.match(clause[match.end() :])
    close = [w for w in before[-2:] if w not in ("the", "a", "an")]
    return bool(document) and not _CUSTOMER_OWNED.intersection(close)


def _is_vendor(word: str, own: list[str]) -> bool:
    return word in _VENDOR_WORDS or word in own or word == "the"


def _the_vendor(tail: list[str], own: list[str]) -> bool:
    """Whether "the" and then ``tail`` (the next three words) is the vendor: "the (Zulip) mobile
    app", "the service", not "the auditor" or "the settings"."""
    return any(w in own or w in _VENDOR_TAIL for w in tail)


def _vendor_asked(before: list[str], own: list[str], document: bool = False) -> bool:
    """Whether the words before a name ask or speak of the vendor shortly before it: an
    auxiliary and the vendor ("is Zulip", "can you"), or the vendor and "is"/"are".

    ``document``: the name is a document the vendor signs or fills in, so "our" may come
    between ("will you sign our BAA?")."""
    for at in range(len(before) - 1, -1, -1):
        word = before[at]
        if word in _AUXILIARIES and at + 1 < len(before) and _is_vendor(before[at + 1], own):
            vendor_end = at + 2
        elif word in ("you're", "youre"):
            vendor_end = at + 1
        elif word in own or word in ("you", "they"):
            # "Zulip is", "Zulip Cloud is", "you guys are"
            verb = at + 1
            while verb < len(before) and before[verb] in _VENDOR_TAIL:
                verb += 1
            if before[verb : verb + 1] not in (["is"], ["are"]):
                continue
            vendor_end = verb + 1
        else:
            continue
        if before[at + 1 : at + 2] == ["the"] and not _the_vendor(before[at + 2 : at + 5], own):
            continue
        while vendor_end < len(before) and (
            before[vendor_end] in _VENDOR_TAIL or before[vendor_end] in own
        ):
            vendor_end += 1
        between = [w for w in before[vendor_end:] if w not in _JOINERS]
        if before[at + 1 : at + 2] == ["it"] and between[:1] and between[0] in _DUMMY_IT_NEXT:
            return False
        if len(between) > _VENDOR_GAP_WORDS:
            return False
        if _FIRST_PERSON.intersection(between) and not document:
            return False
        if before[-1:] and before[-1] in ("for", "under", "per"):
            return bool(_STANDING_WORDS.intersection(between))
        return True
    return False


def _as_place(text: str, pattern: str) -> bool:
    """Whether ``pattern`` matches ``text`` somewhere not shortly after a word such as "with"."""
    for match in re.finditer(pattern, text):
        # The few words before the match, from a short stretch of text (not all of it again).
        before = _WORD_RE.findall(text[max(0, match.start() - 60) : match.start()])
        if not _NOT_A_PLACE_BEFORE.intersection(before[-_WORDS_LOOKED_BACK:]):
            return True
    return False


def _could_be_in(parts: list[str], words: set[str]) -> bool:
    return words.issuperset(parts) or "".join(parts) in words


def _spelling(name: str) -> str:
    """A name as a pattern: its words with spaces, a hyphen or nothing between them ("apple
    watch", "Apple-Watch", "AppleWatch"); a hyphen within a word matches a space too
    ("t-mobile", "T Mobile")."""
    words = [r"[\s-]?".join(map(re.escape, word.split("-"))) for word in name.split()]
    return r"[\s-]*".join(words)


class OffTopicExamples:
    """The examples' embeddings, computed on first use and kept in ``cache_dir`` if given.

    The cache file's name is a hash of the embedding model and the examples, so a changed
    list or model is embedded afresh. Safe to share across threads.
    """

    def __init__(
        self,
        examples: Sequence[str],
        embeddings: Embeddings,
        *,
        model_name: str = "",
        cache_dir: Path | None = None,
    ):
        if not examples:
            raise OffTopicExamplesError("no off-topic examples given")
        self.examples = list(examples)
        self.embeddings = embeddings
        digest = hashlib.sha256("\n".join(["v2", model_name, *self.examples]).encode()).hexdigest()
        self.cache_path = cache_dir / f"off_topic-{digest[:16]}.npy" if cache_dir else None
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        path: Path,
        embeddings: Embeddings,
        *,
        model_name: str = "",
        cache_dir: Path | None = None,
    ) -> OffTopicExamples:
        return cls(read_examples(path), embeddings, model_name=model_name, cache_dir=cache_dir)

    def vectors(self) -> np.ndarray:
        with self._lock:
            if self._vectors is None:
                cached = self._cached()
                vectors = cached if cached is not None else self._embedded()
                vectors.flags.writeable = False  # shared by every thread
                self._vectors = vectors
            return self._vectors

    def index_for(self, knowledge: np.ndarray, overlap: float, block: int = 4096) -> OffTopicIndex:
        """The examples a knowledge base does not cover.

        An example whose cosine similarity to some chunk vector in ``knowledge`` reaches
        ``overlap`` is set aside: that help center has a document on the topic (a lighting
        company's help center and an example about another brand's bulbs), so a question like
        it is not off-topic there.
        """
        vectors = self.vectors()
        nearest = np.full(len(vectors), -1.0, dtype=np.float32)
        if len(knowledge):
            unit = unit_rows(np.asarray(knowledge, dtype=np.float32))
            for start in range(0, len(unit), block):
                sims = vectors @ unit[start : start + block].T
                nearest = np.maximum(nearest, sims.max(axis=1))
        keep = nearest < overlap
        return OffTopicIndex(
            [e for e, k in zip(self.examples, keep, strict=True) if k], vectors[keep]
        )

    def _cached(self) -> np.ndarray | None:
        """The cached vectors, if the file is whole and the model still embeds the same way.

        The file holds one more row than there are examples: the vector of a fixed probe text,
        compared with the model's vector for it now, so a changed model is never trusted.
        """
        if self.cache_path is None:
            return None
        try:
            if not self.cache_path.is_file():
                return None
            rows = np.load(self.cache_path, allow_pickle=False)
            if rows.ndim != 2 or rows.dtype.kind != "f" or len(rows) != len(self.examples) + 1:
                raise ValueError(f"unexpected shape {rows.shape} or type {rows.dtype}")
            # Embedded the way it was written (a document, not a query), compared by cosine.
            probe = np.asarray(self.embeddings.embed_documents([CACHE_PROBE]), np.float32)
            probe = unit_rows(probe)[0]
            cosine = float(unit_rows(rows[-1:])[0] @ probe) if rows.shape[1] == len(probe) else 0
            if cosine < CACHE_PROBE_MIN_COSINE:
                raise ValueError("made with another embedding model")
        except Exception as exc:  # noqa: BLE001 - any unusable cache is embedded afresh
            log.warning("ignoring the off-topic cache %s: %s", self.cache_path, exc)
            return None
        return rows[:-1].astype(np.float32)

    def _embedded(self) -> np.ndarray:
        texts = [*self.examples, CACHE_PROBE]
        rows = unit_rows(np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32))
        if self.cache_path is not None:
            self._save(rows)
        log.info("embedded %d off-topic examples", len(self.examples))
        return rows[:-1]

    def _save(self, rows: np.ndarray) -> None:
        """Write the cache through a temporary file of its own, then drop older caches."""
        assert self.cache_path is not None
        folder = self.cache_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".off_topic-", suffix=".npy")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.save(file, rows, allow_pickle=False)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temporary, 0o644)  # readable by a service running as another user
                os.replace(temporary, self.cache_path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            for old in folder.glob("off_topic-*.npy"):
                if old != self.cache_path:
                    old.unlink(missing_ok=True)
            for left in folder.glob(".off_topic-*.npy"):
                if time.time() - left.stat().st_mtime > STALE_TEMPORARY_S:
                    left.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot cache off-topic vectors in %s: %s", folder, exc)


class OffTopicIndex:
    """The off-topic examples in use for one knowledge base, and their vectors."""

    def __init__(self, examples: list[str], vectors: np.ndarray):
        self.examples = examples
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.examples)

    def closest(self, vector: Sequence[float]) -> OffTopicMatch | None:
        """The example most similar to a normalised query ``vector`` (None without examples)."""
        if not self.examples:
            return None
        similarities = self.vectors @ np.asarray(vector, dtype=np.float32)
        best = int(similarities.argmax())
        return OffTopicMatch(self.examples[best], float(similarities[best]))
