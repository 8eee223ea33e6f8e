"""Hybrid retrieval: dense chunk similarity, BM25 keywords and document titles, per document.

The query is a few weighted texts (the question, and for a follow-up the previous customer message).
Their embeddings are summed into one query vector; all of them feed the keyword search. Each
document's score adds, to the best cosine similarity of its chunks, smaller shares of its best
normalised BM25 score and of its title's similarity. Score fusion (rather than rank fusion)
keeps the margin by which one article is closer than the next; on the Zulip help center it
placed the right article first more often than reciprocal-rank fusion did.

Chunk similarities are corrected for hubness: in an embedding space some texts (overviews, pages
that touch every topic) sit close to almost everything and so come first for many questions
that another article answers better. Each chunk's "hubness" is its mean similarity to its
nearest neighbours in the store; a share of it is taken off the chunk's similarity when ranking
(the CSLS correction of Conneau et al., 2018). The relevance threshold still sees the plain
similarity.

An overview page (one that lists at least three other articles by title, "Format your message":
text emphasis, tables, spoilers, …) sits close to every question on the topics it lists, and
says less about each than the article it points to. When such a page comes before an article it
lists, by less than the overview margin, the article goes first.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from knowledge.off_topic import (
    ComplianceNames,
    OffTopicExamples,
    OffTopicIndex,
    OffTopicMatch,
    OtherProducts,
)
from knowledge.store import KnowledgeStore, StoredChunk
from knowledge.vectors import unit_rows

log = logging.getLogger(__name__)
WORD_RE = re.compile(r"[a-z0-9]+(?:['+#.-][a-z0-9]+)*")
LETTERS_RE = re.compile(r"[a-z]+")
# Words that say nothing about a question's topic: function words, chat words and
# interjections ("phew", "ugh"), politeness.
_COMMON_WORDS_TEXT = """
    about above after again against all also am an and any anyone anything are aren as asap at
    back be because been before being below between both but by can cannot could couldn did
    didn do does doesn doing don done down during each either else even ever every few for from
    further get gets getting got gotten had hadn has hasn have haven having he hello help her
    here hers herself hey hi him himself his how however if in into is isn it its itself just
    know let like lol may maybe me might mine more most much must my myself need needs no nor
    not now of off ok okay on once one only or other our ours ourselves out over own please pls
    plz quick quickly really right same say says see seems she should shouldn since so some
    someone something sorry still such sure tell than thank thanks thanx that the their theirs
    them themselves then there these they thing things this those though through thx to too
    try trying under until up upon urgent urgently us use used using very want wants was wasn
    way we were weren what whatever when where whether which while who whom whose why will with
    without won would wouldn yes yet you your yours yourself yourselves
    aha ahh argh aww btw darn dang duh fyi gosh haha hah hehe hmm hmmm huh idk imho imo meh
    nah nope ohh omg oops ouch phew tbh ugh umm whoa wow yay yeah yep yikes yup
"""
COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())
# A word in at least this share of the documents that the embedding model does not know as a
# word is taken for the product's own name ("zulip", "lumora"); at most the two most widespread.
OWN_NAME_SHARE = 0.8
OWN_NAME_MIN_DOCUMENTS = 3
OWN_NAME_MOST = 2
# Chunks fetched to find the nearest live one (a chunk being written is not live yet).
NEAREST_FOR_COMPARISON = 10
# A question compared without the product's name must be at least this similar to an example.
NAMELESS_MIN_SIMILARITY = 0.55
# A document that lists at least this many other documents by title is an overview page.
OVERVIEW_MIN_LISTED = 3
# Overview pages give way to the articles they list among this many first documents (or top_k).
OVERVIEW_WINDOW = 5
# Query texts whose embeddings are kept for the next turn's query.
EMBEDDED_KEPT = 256
# A list item: a bullet ("*", "-", "+", "•") or a number ("1." or "1)") at the start of a line.
LIST_ITEM_RE = re.compile(r"^\s*(?:[*+•-]|\d{1,3}[.)])\s+(.+)$")


@dataclass(frozen=True)
class WeightedQuery:
    """One text of the query and its weight in the query vector (0: keywords only)."""

    text: str
    weight: float = 1.0
    # From an earlier turn (the previous customer message or answer), not the question itself.
    earlier: bool = False
    # For an earlier answer: the documents it cited, first first (empty when it cited none);
    # None when not known.
    shown: tuple[str, ...] | None = None


@dataclass(frozen=True)
class WordCoverage:
    """Of a message's topic words, how many the one chunk that holds most of them holds."""

    held: int
    words: int

    @property
    def share(self) -> float:
        """The share held (1.0 for a message of no topic words: nothing is missing)."""
        return self.held / self.words if self.words else 1.0


@dataclass(frozen=True)
class FusionWeights:
    """Shares of each signal beside the dense chunk similarity (which counts 1)."""

    keywords: float = 0.2
    title: float = 0.2
    # Share of a chunk's hubness taken off its similarity when ranking.
    hubness: float = 0.2
    # Taken off a follow-up's score for the earlier answer's first source (see
    # HybridRetriever._previous_article).
    previous_article: float = 0.05


@dataclass
class DocumentHit:
    """A retrieved document: its score, its best chunk similarity and its best chunks."""

    source: str
    title: str
    score: float
    similarity: float
    chunks: list[StoredChunk] = field(default_factory=list)


class _KeywordIndex:
    """BM25 over the live chunks, rebuilt when the store's generation changes."""

    def __init__(
        self,
        chunks: list[StoredChunk],
        synonyms: dict[str, list[str]],
        dictionary: frozenset[str] = frozenset(),
    ):
        """``dictionary``: real words (the embedding model's); one is never taken for a typo."""
        import bm25s
        import Stemmer

        # bm25s sets its own logger to DEBUG on import, which would log every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.chunks = chunks
        self._stemmer = Stemmer.Stemmer("english")
        self._synonyms = synonyms
        self._alternatives = {term.lower(): alts for term, alts in synonyms.items()}
        self._dictionary = dictionary
        self._bm25 = None
        if chunks:
            texts = [f"{c.title} {c.heading} {c.title} {c.text}" for c in chunks]
            tokens = bm25s.tokenize(
                texts, stopwords="en", stemmer=self._stemmer, show_progress=False
            )
            self._bm25 = bm25s.BM25()
            self._bm25.index(tokens, show_progress=False)
            self._vocab = tokens.vocab
            # The chunks each stemmed word is in, for word_coverage.
            postings: dict[int, list[int]] = {}
            for position, ids in enumerate(tokens.ids):
                for token in set(ids):
                    postings.setdefault(token, []).append(position)
            self._postings = {t: np.asarray(p) for t, p in postings.items()}

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that no chunk uses, as written.

        Function words, greetings and politeness ("me", "got", "thanks"), words under three
        letters and digits never count; nor does a word the configured synonyms map to a known
        word, or a word of five letters or more, not in the dictionary, one typo away from a
        known one.
        """
        if self._bm25 is None:
            return []
        return [word for word in _topic_words(text) if not self._indexed_as(word)]

    def word_coverage(self, text: str, leave_out: frozenset[str] = frozenset()) -> WordCoverage:
        """How many of the topic words of ``text`` the chunk that holds most of them holds
        (stemmed). Function words, greetings, politeness, words under three letters and
        ``leave_out`` (the product's own name) are no topic words; a word is found as itself,
        as a configured synonym or, misspelt, as a known word one letter away (see
        ``unknown_words``)."""
        from bm25s.stopwords import STOPWORDS_EN

        words = [w for w in _topic_words(text) if w not in leave_out and w not in STOPWORDS_EN]
        if self._bm25 is None or not words:
            return WordCoverage(0, len(words))
        counts = np.zeros(len(self.chunks), dtype=np.int32)
        for word in words:
            found = np.zeros(len(self.chunks), dtype=bool)
            for token in self._indexed_as(word):
                found[self._postings[token]] = True
            counts += found
        return WordCoverage(int(counts.max()), len(words))

    def _indexed_as(self, word: str) -> set[int]:
        """The indexed words that ``word`` stands for: itself, the configured synonyms' words,
        or, for a word of five letters or more not in the dictionary, the known words one typo
        away. Empty: the word is unknown."""
        stem = self._stemmer.stemWord(word)
        if stem in self._vocab:
            return {self._vocab[stem]}
        alternatives = {
            self._stemmer.stemWord(w) for a in self._alternatives.get(word, []) for w in a.split()
        }
        tokens = {self._vocab[a] for a in alternatives if a in self._vocab}
        if tokens or len(word) < 5 or word in self._dictionary:
            return tokens  # too short to tell, or a real word ("sprint" is not a typo of "print")
        edits = self._stemmer.stemWords(sorted(_one_edit(word)))
        return {self._vocab[e] for e in edits if e in self._vocab}

    def scores(self, text: str) -> np.ndarray | None:
        """BM25 score of every chunk for ``text``, or None when no word is known."""
        if self._bm25 is None:
            return None
        import bm25s

        tokens = bm25s.tokenize(
            expand_synonyms(text.lower(), self._synonyms),
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )[0]
        known = [t for t in tokens if t in self._vocab]
        return self._bm25.get_scores(known) if known else None


@dataclass(frozen=True)
class _Indexes:
    """What is built from the whole store: BM25 over the chunks, and each chunk's hubness."""

    keywords: _KeywordIndex
    hubness: dict[str, float]
    # The off-topic examples this store does not cover (None: no off-topic check).
    off_topic: OffTopicIndex | None = None
    # The product's own name(s), found in the documents (see own_names).
    own_names: frozenset[str] = frozenset()
    # The other companies' products that no document mentions.
    not_mentioned: frozenset[str] = frozenset()
    # The regulations and certifications that no document mentions.
    compliance_not_mentioned: frozenset[str] = frozenset()
    # Overview pages and the documents each lists (see overviews).
    overviews: dict[str, frozenset[str]] = field(default_factory=dict)


def hubness(vectors: np.ndarray, neighbours: int, block: int = 1024) -> np.ndarray:
    """Each row's mean cosine similarity to its ``neighbours`` nearest other rows.

    Computed a block of rows at a time, so memory stays at ``block`` x n similarities.
    """
    count = len(vectors)
    if count < 2 or neighbours < 1:
        return np.zeros(count, dtype=np.float32)
    unit = unit_rows(vectors)
    k = min(neighbours, count - 1)
    out = np.empty(count, dtype=np.float32)
    for start in range(0, count, block):
        sims = unit[start : start + block] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        out[start : start + block] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    return out


def own_names(chunks: Sequence[StoredChunk], vocabulary: frozenset[str]) -> frozenset[str]:
    """The (at most two) most widespread words that are in most documents and that the
    embedding model does not know as words.

    That is a help center's own product name: it matches every article, so it says nothing about
    whether a question is one the help center answers.
    """
    words: dict[str, set[str]] = {}
    for chunk in chunks:
        words.setdefault(chunk.source, set()).update(
            LETTERS_RE.findall(f"{chunk.title} {chunk.text}".lower())
        )
    if len(words) < OWN_NAME_MIN_DOCUMENTS:
        return frozenset()
    frequency = Counter(w for found in words.values() for w in found)
    names = [
        w
        for w, n in frequency.most_common()
        if n >= OWN_NAME_SHARE * len(words) and w not in vocabulary
    ]
    return frozenset(names[:OWN_NAME_MOST])


def _title_key(text: str) -> str:
    return " ".join(text.split()).rstrip(".:;?!").casefold()


def overviews(chunks: Sequence[StoredChunk]) -> dict[str, frozenset[str]]:
    """The documents that list at least OVERVIEW_MIN_LISTED others by title, one list item each
    ("* Text emphasis"), with the documents they list.

    A title two documents share names neither. A numbered step that happens to be another
    article's title ("1. Open the compose box") counts as well, but a page needs three such
    items to be taken for an overview.
    """
    sources: dict[str, str | None] = {}
    for chunk in chunks:
        key = _title_key(chunk.title)
        if key and sources.get(key, chunk.source) != chunk.source:
            sources[key] = None  # shared title
        elif key:
            sources[key] = chunk.source
    listed: dict[str, set[str]] = {}
    for chunk in chunks:
        for line in chunk.text.splitlines():
            item = LIST_ITEM_RE.match(line)
            other = sources.get(_title_key(item.group(1))) if item else None
            if other is not None and other != chunk.source:
                listed.setdefault(chunk.source, set()).add(other)
    return {s: frozenset(o) for s, o in listed.items() if len(o) >= OVERVIEW_MIN_LISTED}


def overviews_give_way(
    hits: list[DocumentHit], listed: dict[str, frozenset[str]], margin: float
) -> list[DocumentHit]:
    """``hits`` (best first) with the articles an overview page lists, of those scoring less than
    ``margin`` below it, moved to just before it, in their own order; an article that is itself
    an overview gives way in turn ("Index" > "Formatting" > "Tables": "Tables" first).

    Scores are left as they are; only the order changes, and only within ``hits``.
    """
    if margin <= 0 or not listed:
        return hits
    ordered = list(hits)
    # Each move puts a lower-scored article before a higher-scored overview, so a few passes
    # settle it; the bound only guards against a cycle no real store makes.
    for _ in range(len(ordered) ** 2):
        move = next(
            (
                (i, j)
                for i, overview in enumerate(ordered)
                for j in range(i + 1, len(ordered))
                if ordered[j].source in listed.get(overview.source, ())
                and 0 <= overview.score - ordered[j].score < margin
            ),
            None,
        )
        if move is None:
            break
        i, j = move
        ordered.insert(i, ordered.pop(j))
    return ordered


def named(text: str, words: frozenset[str]) -> set[str]:
    """Which of ``words`` occur in ``text``."""
    return {w for w in LETTERS_RE.findall(text.lower()) if w in words}


def without_words(text: str, words: frozenset[str]) -> str:
    """``text`` without ``words`` (and their possessive), or unchanged if nothing else is left."""
    if not words:
        return text
    pattern = r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")(?:'s)?\b"
    stripped = " ".join(re.sub(pattern, " ", text, flags=re.IGNORECASE).split())
    return stripped if LETTERS_RE.search(stripped) else text


def _topic_words(text: str) -> list[str]:
    """The words of ``text`` that could name a topic, lower case, each once: no function word,
    greeting or politeness ("me", "got", "thanks"), none under three letters, no digits."""
    return [
        w
        for w in dict.fromkeys(LETTERS_RE.findall(text.lower()))
        if len(w) >= 3 and w not in COMMON_WORDS
    ]


def _one_edit(word: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion away from ``word``."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return (
        {a + b[1:] for a, b in splits if b}
        | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
        | {a + c + b[1:] for a, b in splits if b for c in letters}
        | {a + c + b for a, b in splits for c in letters}
    )


def expand_synonyms(text: str, synonyms: dict[str, list[str]]) -> str:
    """Append the configured alternative words for terms found in ``text``."""
    if not synonyms:
        return text
    words = set(WORD_RE.findall(text.lower()))
    extra = [alt for term, alts in synonyms.items() if term.lower() in words for alt in alts]
    return f"{text} {' '.join(extra)}" if extra else text


class HybridRetriever:
    """Searches the knowledge store; safe to share between threads."""

    def __init__(
        self,
        store: KnowledgeStore,
        *,
        weights: FusionWeights | None = None,
        dense_candidates: int = 80,
        title_candidates: int = 50,
        synonyms: dict[str, list[str]] | None = None,
        hubness_neighbours: int = 20,
        off_topic: OffTopicExamples | None = None,
        off_topic_overlap: float = 0.42,
        other_products: OtherProducts | None = None,
        overview_margin: float = 0.1,
        compliance: ComplianceNames | None = None,
        product_names: Sequence[str] = (),
    ):
        """``overview_margin``: how far below an overview page an article it lists may score and
        still come first (0: the order of the scores). ``compliance``: names of regulations and
        certifications (see ``unmentioned_compliance``). ``product_names``: the product's own
        name, one lower-case word each, besides those found in the documents (see
        ``own_names``)."""
        self.store = store
        self.product_names = frozenset(product_names)
        self.compliance = compliance
        self.overview_margin = overview_margin
        self.off_topic = off_topic
        self.other_products = other_products
        self.off_topic_overlap = off_topic_overlap
        self.weights = weights or FusionWeights()
        self.dense_candidates = dense_candidates
        self.title_candidates = title_candidates
        self.synonyms = dict(synonyms or {})
        self.hubness_neighbours = hubness_neighbours
        self._indexes_built: _Indexes | None = None
        # The own names the documents gave at the last build (None before the first).
        self._found_names: frozenset[str] | None = None
        self._generation = -1
        self._lock = threading.Lock()
        # Recent query texts' embeddings, least recently used first (see _embed); in memory
        # only, as the conversations' own store keeps the messages anyway.
        self._embedded: dict[str, np.ndarray] = {}
        self._embedded_lock = threading.Lock()

    def _keyword_index(self) -> _KeywordIndex:
        return self._indexes().keywords

    def refresh(self) -> None:
        """Build the search indexes now if the store changed, so that no question waits for it."""
        self._indexes()

    def _indexes(self) -> _Indexes:
        """The keyword index, the chunks' hubness and the off-topic examples the store does not
        cover, rebuilt when the store has changed."""
        generation = self.store.generation()
        with self._lock:
            if self._indexes_built is not None and generation == self._generation:
                return self._indexes_built
            started = time.perf_counter()
            chunk_hubness: dict[str, float] = {}
            off_topic = None
            names: frozenset[str] = frozenset()
            dictionary = self._dictionary()
            if self.weights.hubness or self.off_topic is not None:
                # The chunks and their vectors from one read, so every index sees the same store.
                chunks, vectors = self.store.live_vectors()
                if self.weights.hubness:
                    values = hubness(vectors, self.hubness_neighbours)
                    chunk_hubness = {
                        c.chunk_id: v for c, v in zip(chunks, values.tolist(), strict=True)
                    }
                if self.off_topic is not None:
                    off_topic = self.off_topic.index_for(vectors, self.off_topic_overlap)
            else:
                chunks = self.store.live_chunks()
            # The product's own name: for the off-topic check, and as the vendor in a
            # compliance question ("does Lumora meet HIPAA?").
            if (self.off_topic is not None or self.compliance is not None) and dictionary:
                names = own_names(chunks, dictionary)
                self._name_changed(names)
            names = names | self.product_names
            keywords = _KeywordIndex(chunks, self.synonyms, dictionary)
            texts = [f"{c.title}\n{c.heading}\n{c.text}" for c in chunks]
            not_mentioned = (
                self.other_products.not_mentioned(texts)
                if self.other_products is not None
                else frozenset()
            )
            compliance = (
                self.compliance.not_mentioned(texts) if self.compliance is not None else frozenset()
            )
            self._indexes_built = _Indexes(
                keywords,
                chunk_hubness,
                off_topic,
                names,
                not_mentioned,
                compliance,
                overviews(chunks) if self.overview_margin > 0 else {},
            )
            self._generation = generation
            lists = ""
            if self.other_products is not None:
                mentioned = [n for n in self.other_products.names if n not in not_mentioned]
                lists = (
                    f"; {len(not_mentioned)} other products' names in use (your documents "
                    f"mention {', '.join(mentioned) or 'none of them'})"
                )
            if self.compliance is not None:
                covered = [n for n in self.compliance.names if n not in compliance]
                lists += (
                    f"; regulations and certifications your documents mention: "
                    f"{', '.join(covered) or 'none'}"
                )
            log.info(
                "search indexes built for %d chunks in %.2f s%s%s",
                len(keywords.chunks),
                time.perf_counter() - started,
                ""
                if off_topic is None
                else f"; {len(off_topic)} off-topic examples in use; own names: "
                f"{', '.join(sorted(names)) or 'none'}",
                lists,
            )
            return self._indexes_built

    def _name_changed(self, found: frozenset[str]) -> None:
        """Say so when the product's own name found in the documents changes: documents that
        do not mention it (another team's policies, say) can take it below the share that
        makes it the name, and the off-topic and compliance checks read it."""
        before, self._found_names = self._found_names, found
        if before is None or before == found or self.product_names:
            return
        log.warning(
            "the product's own name found in the documents changed from %s to %s; set "
            "retrieval.product_names to keep it whatever the documents say",
            ", ".join(sorted(before)) or "none",
            ", ".join(sorted(found)) or "none",
        )

    def _dictionary(self) -> frozenset[str]:
        """The whole words the embedding model knows (empty if it cannot tell)."""
        vocabulary = getattr(self.store.embeddings, "vocabulary", None)
        return vocabulary() if vocabulary is not None else frozenset()

    def closest_off_topic(
        self, queries: Sequence[WeightedQuery], vector: Sequence[float]
    ) -> OffTopicMatch | None:
        """The off-topic example (of those the store does not cover) closest to the question,
        with the best live chunk's similarity to the same question to compare it with.

        ``vector`` is the queries' vector. When the question names the product itself and,
        without that name, closely matches an example, both similarities are taken without the
        name: it brings the question closer to every document and to none of the examples
        ("who is the CEO of <product>?"). None when there is no example or no live chunk.
        """
        indexes = self._indexes()
        if indexes.off_topic is None:
            return None
        dense = [q for q in queries if q.weight > 0]
        nameless = [replace(q, text=without_words(q.text, indexes.own_names)) for q in dense]
        if nameless != dense:
            nameless_vector = self.query_vector(nameless)
            match = indexes.off_topic.closest(nameless_vector)
            # Without the name a short question says little ("is it down?"): the nameless
            # comparison counts only when the question plainly matches an example.
            if match is not None and match.similarity >= NAMELESS_MIN_SIMILARITY:
                best = self._best_similarity(nameless_vector)
                if best is not None:
                    removed = {w for q in dense for w in named(q.text, indexes.own_names)}
                    return replace(match, document_similarity=best, without=tuple(sorted(removed)))
        match = indexes.off_topic.closest(vector)
        best = self._best_similarity(vector)
        if match is None or best is None:
            return None
        return replace(match, document_similarity=best)

    def unmentioned_products(self, text: str) -> tuple[str, ...]:
        """The other companies' products ``text`` names that no live chunk mentions."""
        if self.other_products is None:
            return ()
        not_mentioned = self._indexes().not_mentioned
        return tuple(n for n in self.other_products.named_in(text) if n in not_mentioned)

    def unmentioned_compliance(self, text: str) -> tuple[str, ...]:
        """The regulations and certifications that ``text`` asks the vendor's standing on ("is
        it HIPAA compliant?", "send us your SOC 2 report") and that no live chunk mentions:
        whatever the company has signed or been audited for, the documents do not say. A name
        given only as the customer's reason ("our HIPAA policy says ...") does not count."""
        if self.compliance is None:
            return ()
        indexes = self._indexes()
        named = [n for n in self.compliance.named_in(text) if n in indexes.compliance_not_mentioned]
        if not named:
            return ()
        return tuple(self.compliance.claimed(text, named, indexes.own_names))

    def products_asked_about(self, text: str, best_title: str = "") -> tuple[str, ...]:
        """The other companies' products that ``text`` names and asks about for themselves
        ("cancel my slack plan"), of those the documents do mention (see
        ``OtherProducts.asked_about``), except one that ``best_title``, the title of the article
        found first, names too ("Sign in with GitHub" may well answer it)."""
        if self.other_products is None:
            return ()
        indexes = self._indexes()
        in_title = set(self.other_products.named_in(best_title))
        mentioned = [
            n
            for n in self.other_products.named_in(text)
            if n not in indexes.not_mentioned and n not in in_title
        ]
        if not mentioned:
            return ()
        return tuple(self.other_products.asked_about(text, mentioned, indexes.own_names))

    def _best_similarity(self, vector: Sequence[float]) -> float | None:
        """The similarity of the nearest live chunk (None in an empty store)."""
        nearest = self.store.search(list(vector), NEAREST_FOR_COMPARISON)
        return nearest[0].similarity if nearest else None

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that no live chunk uses (stemmed, without stop words)."""
        return self._indexes().keywords.unknown_words(text)

    def word_coverage(self, text: str) -> WordCoverage:
        """How many of the topic words of ``text`` one live chunk holds at most, the product's
        own name left out (see ``_KeywordIndex.word_coverage``)."""
        indexes = self._indexes()
        return indexes.keywords.word_coverage(text, indexes.own_names)

    def own_names(self) -> frozenset[str]:
        """The product names found in the store (see ``own_names``)."""
        return self._indexes().own_names

    def chunk_hubness(self, chunk_id: str) -> float:
        """How close a chunk sits to everything else (0 when unknown or switched off)."""
        return self._indexes().hubness.get(chunk_id, 0.0)

    def query_vector(self, queries: Sequence[WeightedQuery]) -> list[float]:
        """The weighted sum of the query texts' embeddings, normalised."""
        dense = [q for q in queries if q.weight > 0]
        vectors = self._embed([expand_synonyms(q.text, self.synonyms) for q in dense])
        combined = (vectors * np.asarray([q.weight for q in dense])[:, None]).sum(axis=0)
        return (combined / (np.linalg.norm(combined) or 1.0)).tolist()

    def _embed(self, texts: list[str]) -> np.ndarray:
        """The texts' embeddings, those of recent query texts from memory: a follow-up's query
        holds the previous question, embedded a turn before."""
        with self._embedded_lock:
            known = {t: self._embedded[t] for t in texts if t in self._embedded}
            for text in known:  # used again: kept longest
                self._embedded[text] = self._embedded.pop(text)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = self.store.embeddings.embed_documents(missing)
            known.update(zip(missing, (np.asarray(v) for v in fresh), strict=True))
            with self._embedded_lock:
                self._embedded.update((t, known[t]) for t in missing)
                while len(self._embedded) > EMBEDDED_KEPT:
                    self._embedded.pop(next(iter(self._embedded)))
        return np.asarray([known[t] for t in texts])

    def retrieve(
        self,
        queries: Sequence[WeightedQuery],
        k: int = 5,
        vector: Sequence[float] | None = None,
    ) -> list[DocumentHit]:
        """The ``k`` best documents for the weighted queries, best first.

        ``vector`` is the queries' ``query_vector`` when the caller has already computed it.
        """
        if not queries or not any(q.weight > 0 for q in queries):
            return []
        vector = list(vector) if vector is not None else self.query_vector(queries)
        indexes = self._indexes()  # one consistent snapshot for this query
        hits: dict[str, DocumentHit] = {}
        ranked: dict[str, float] = {}
        for chunk in self.store.search(vector, self.dense_candidates):
            hit = hits.setdefault(
                chunk.source, DocumentHit(chunk.source, chunk.title, 0.0, chunk.similarity)
            )
            hit.chunks.append(chunk)
            corrected = chunk.similarity - self.weights.hubness * indexes.hubness.get(
                chunk.chunk_id, 0.0
            )
            ranked[chunk.source] = max(ranked.get(chunk.source, corrected), corrected)
        self._add_keywords(hits, " ".join(q.text for q in queries), indexes.keywords)
        for source, similarity in self.store.search_titles(vector, self.title_candidates).items():
            if source in hits:
                hits[source].score += self.weights.title * similarity
        for hit in hits.values():
            hit.score += ranked.get(hit.source, hit.similarity)
        previous = self._previous_article(queries)
        if previous in hits:
            hits[previous].score -= self.weights.previous_article
        # Overviews give way among the first OVERVIEW_WINDOW (or k) documents, whatever k is,
        # so a smaller k shows the first of the same order.
        best = sorted(hits.values(), key=lambda h: h.score, reverse=True)
        window = best[: max(k, OVERVIEW_WINDOW)]
        return overviews_give_way(window, indexes.overviews, self.overview_margin)[:k]

    def _previous_article(self, queries: Sequence[WeightedQuery]) -> str | None:
        """The document the earlier answer cited first; when that is not known, the one the
        earlier customer message finds first, searched on its own.

        The customer has had its answer already. A follow-up it answers too ("and on my phone?")
        still finds it first by a wide margin; one that moves on ("how do i turn it off?") should
        find the article next to it, which the earlier message's share of the query (and the
        earlier answer's words) would otherwise keep behind it. Only for a query that reads the
        earlier message (a weight above 0).
        """
        earlier = [WeightedQuery(q.text, 1.0) for q in queries if q.earlier and q.weight > 0]
        if (
            not self.weights.previous_article
            or not earlier
            or not any(q.weight > 0 and not q.earlier for q in queries)
        ):
            return None
        shown = next((q.shown for q in queries if q.earlier and q.shown is not None), None)
        if shown is not None:
            return shown[0] if shown else None
        found = self.retrieve(earlier, k=1)
        return found[0].source if found else None

    def _add_keywords(self, hits: dict[str, DocumentHit], text: str, index: _KeywordIndex) -> None:
        scores = index.scores(text)
        if scores is None or float(scores.max()) <= 0:
            return
        top = float(scores.max())
        best: dict[str, tuple[float, StoredChunk]] = {}
        for position in np.flatnonzero(scores > 0):
            chunk = index.chunks[int(position)]
            value = float(scores[position]) / top
            if value > best.get(chunk.source, (0.0, chunk))[0]:
                best[chunk.source] = (value, chunk)
        for source, (value, chunk) in best.items():
            hit = hits.get(source)
            if hit is None:
                hit = hits[source] = DocumentHit(source, chunk.title, 0.0, 0.0, [chunk])
            hit.score += self.weights.keywords * value
