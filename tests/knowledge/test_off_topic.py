"""Off-topic examples: reading the list, caching its vectors, and setting aside what a store covers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from knowledge.off_topic import (
    BUNDLED_EXAMPLES,
    BUNDLED_PRODUCTS,
    CACHE_PROBE,
    OffTopicExamples,
    OffTopicExamplesError,
    OtherProducts,
    read_examples,
    read_product_names,
)
from knowledge.retriever import COMMON_WORDS, _KeywordIndex, own_names, without_words
from knowledge.store import StoredChunk

VOCABULARY = ["bank", "fee", "pizza", "bulb", "wifi", "invoice", "recipe"]


class WordEmbeddings(Embeddings):
    """One dimension per vocabulary word, and a count of the texts it was asked to embed."""

    def __init__(self):
        self.embedded: list[str] = []

    def _vector(self, text: str) -> list[float]:
        words = text.lower().split()
        vector = np.array([float(w in words) for w in VOCABULARY]) + 0.01
        return (vector / np.linalg.norm(vector)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def test_read_examples_skips_comments_blank_lines_and_repeats(tmp_path):
    path = tmp_path / "examples.txt"
    path.write_text("# a comment\n\n  bank fee refund  \nbank fee refund\npizza recipe\n# end\n")

    assert read_examples(path) == ["bank fee refund", "pizza recipe"]


def test_read_examples_names_a_missing_or_empty_file(tmp_path):
    with pytest.raises(OffTopicExamplesError, match="missing.txt"):
        read_examples(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(OffTopicExamplesError, match="no off-topic examples"):
        read_examples(empty)


def test_bundled_examples_are_a_real_list():
    examples = read_examples(BUNDLED_EXAMPLES)

    assert len(examples) >= 300
    assert all(4 <= len(e.split()) <= 40 for e in examples)


def test_product_names_are_found_whole_in_any_case_and_spacing():
    products = OtherProducts(["Slack", "microsoft   teams", "t-mobile", "disney+", "at&t"])

    found = products.named_in(
        "My SLACK's settings, Microsoft\n Teams and t-mobile; slack again, disney+ and AT&T"
    )

    assert found == ["slack", "microsoft teams", "t-mobile", "disney+", "at&t"]
    # Part of another word, or one word of a longer name, is not the name.
    assert products.named_in("slacking teams of mobile users at the disney store") == []


def test_the_names_no_text_mentions():
    products = OtherProducts(["slack", "github", "google workspace"])

    texts = ["Import your Slack workspace.", "Sign in with your Google account."]
    assert products.not_mentioned(texts) == {"github", "google workspace"}
    assert products.not_mentioned([]) == {"slack", "github", "google workspace"}


def test_read_product_names_names_a_missing_or_empty_file(tmp_path):
    with pytest.raises(OffTopicExamplesError, match="missing.txt"):
        read_product_names(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# none yet\n", encoding="utf-8")
    with pytest.raises(OffTopicExamplesError, match="no product names"):
        read_product_names(empty)


def test_bundled_product_names_are_names_not_everyday_words():
    products = OtherProducts.from_file(BUNDLED_PRODUCTS)
    spellings = [
        s.strip() for line in read_product_names(BUNDLED_PRODUCTS) for s in line.split("|")
    ]

    assert len(products.names) >= 60
    assert len(set(spellings)) == len(spellings)
    assert not {s for s in spellings if " " not in s} & COMMON_WORDS
    # Tools customers use with any product, places they share links from, shops they buy in.
    left_out = {"gmail", "outlook", "excel", "chrome", "iphone", "youtube", "dropbox", "amazon"}
    assert not left_out & set(spellings)


@pytest.mark.parametrize(
    "question",
    [
        "can i message support instead of using the chat?",
        "i message the hub name but alexa doesn't find it",
        "which bulbs are linked in my account?",
        "whats app version do i need to set up the hub?",
        "why doesn't mobile data let me control my lights away from home?",
        "my slacks are too long and the teamsters union called",
    ],
)
def test_everyday_phrases_are_no_product_names(question):
    assert OtherProducts.from_file(BUNDLED_PRODUCTS).named_in(question) == []


def test_a_name_of_several_words_is_found_run_together_or_hyphenated():
    products = OtherProducts(["apple watch", "t-mobile", "office 365"])

    found = products.named_in("AppleWatch, Apple-Watch, T Mobile, TMobile and Office365")
    assert found == ["apple watch", "t-mobile", "office 365"]
    assert products.not_mentioned(["the applewatch app", "Office-365 users"]) == {"t-mobile"}
    assert products.not_mentioned(["it doesn't mobile"]) == {
        "apple watch",
        "t-mobile",
        "office 365",
    }


def test_a_product_goes_by_any_of_its_names():
    products = OtherProducts(["Microsoft Teams | MS Teams | msteams", "slack"])

    assert products.names == ["microsoft teams", "slack"]
    assert products.named_in("my ms  teams status and MSTEAMS") == ["microsoft teams"]
    # A document that uses one name mentions the product under every name.
    assert products.not_mentioned(["Import from Microsoft Teams."]) == {"slack"}
    assert products.not_mentioned(["Our msteams bridge."]) == {"slack"}


def test_a_name_is_found_whatever_its_case_folds_to():
    products = OtherProducts(["instagram", "rocket.chat", "monday.com"])

    assert products.named_in("İnstagram, Rocket.Chat and MONDAY.COM") == [
        "instagram",
        "rocket.chat",
        "monday.com",
    ]
    assert products.named_in("rocket chat on monday") == []


def test_closest_example_and_its_similarity():
    examples = OffTopicExamples(["bank fee", "pizza recipe"], WordEmbeddings())
    index = examples.index_for(np.zeros((0, len(VOCABULARY))), overlap=0.5)

    match = index.closest(WordEmbeddings().embed_query("pizza"))

    assert match.example == "pizza recipe"
    assert match.similarity == pytest.approx(0.707, abs=0.01)


def test_examples_a_store_covers_are_set_aside():
    embeddings = WordEmbeddings()
    examples = OffTopicExamples(["bulb wifi", "bank fee", "pizza recipe"], embeddings)
    lighting_docs = np.array(embeddings.embed_documents(["bulb wifi invoice"]))

    index = examples.index_for(lighting_docs, overlap=0.7)

    assert index.examples == ["bank fee", "pizza recipe"]
    assert index.closest(embeddings.embed_query("bulb wifi")).example != "bulb wifi"


def test_every_example_covered_leaves_no_check():
    embeddings = WordEmbeddings()
    examples = OffTopicExamples(["bank fee"], embeddings)

    index = examples.index_for(np.array(embeddings.embed_documents(["bank fee"])), overlap=0.5)

    assert len(index) == 0
    assert index.closest(embeddings.embed_query("bank")) is None


def test_vectors_are_cached_per_model_and_list(tmp_path):
    first = WordEmbeddings()
    OffTopicExamples(["bank fee", "pizza"], first, model_name="m", cache_dir=tmp_path).vectors()
    assert first.embedded == ["bank fee", "pizza", CACHE_PROBE]

    again = WordEmbeddings()
    vectors = OffTopicExamples(
        ["bank fee", "pizza"], again, model_name="m", cache_dir=tmp_path
    ).vectors()
    assert again.embedded == [CACHE_PROBE]  # read from the cache, after checking the model
    assert vectors.shape == (2, len(VOCABULARY))

    changed_list, other_model = WordEmbeddings(), WordEmbeddings()
    OffTopicExamples(["bank fee"], changed_list, model_name="m", cache_dir=tmp_path).vectors()
    OffTopicExamples(
        ["bank fee", "pizza"], other_model, model_name="n", cache_dir=tmp_path
    ).vectors()
    assert changed_list.embedded == ["bank fee", CACHE_PROBE]
    assert other_model.embedded == ["bank fee", "pizza", CACHE_PROBE]


@pytest.mark.parametrize(
    "bad_cache",
    [
        b"not numpy",
        b"",
        "wrong width",
        "text rows",
        "another model",
    ],
)
def test_an_unusable_cache_is_embedded_afresh(tmp_path, caplog, bad_cache):
    examples = OffTopicExamples(["bank fee"], WordEmbeddings(), cache_dir=tmp_path)
    if bad_cache == "wrong width":
        np.save(examples.cache_path, np.ones((2, 3), dtype=np.float32))
    elif bad_cache == "text rows":
        np.save(examples.cache_path, np.array([["a"] * len(VOCABULARY)] * 2))
    elif bad_cache == "another model":
        np.save(examples.cache_path, np.eye(2, len(VOCABULARY), dtype=np.float32))
    else:
        examples.cache_path.write_bytes(bad_cache)
    embeddings = WordEmbeddings()
    fresh = OffTopicExamples(["bank fee"], embeddings, cache_dir=tmp_path)

    with caplog.at_level(logging.WARNING):
        vectors = fresh.vectors()

    assert "bank fee" in embeddings.embedded
    assert vectors.shape == (1, len(VOCABULARY))
    assert "ignoring the off-topic cache" in caplog.text
    assert np.load(fresh.cache_path).shape == (2, len(VOCABULARY))  # rewritten, with the probe


def test_a_cache_that_cannot_be_written_is_only_a_warning(tmp_path, caplog):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    embeddings = WordEmbeddings()

    with caplog.at_level(logging.WARNING):
        vectors = OffTopicExamples(["bank fee"], embeddings, cache_dir=blocked).vectors()

    assert vectors.shape == (1, len(VOCABULARY))
    assert "cannot cache off-topic vectors" in caplog.text


def test_a_new_cache_replaces_the_old_ones(tmp_path):
    OffTopicExamples(["bank fee"], WordEmbeddings(), cache_dir=tmp_path).vectors()
    newer = OffTopicExamples(["bank fee", "pizza"], WordEmbeddings(), cache_dir=tmp_path)
    newer.vectors()

    assert [p.name for p in tmp_path.iterdir()] == [newer.cache_path.name]


def _chunk(source: str, text: str, title: str = "") -> StoredChunk:
    return StoredChunk(f"{source}#0", source, title, "", text)


def test_own_names_are_unknown_words_in_most_documents():
    chunks = [
        _chunk("a.md", "Pair a bulb with the Lumora app."),
        _chunk("b.md", "Lumora's plans and pricing: the bulb is free (lumora.com)."),
        _chunk("c.md", "Reset the hub.", title="Lumora hub"),
        _chunk("d.md", "Zigbee bulbs pair with the hub. Lumora"),
        _chunk("e.md", "Lumora dimmer, Zigbee and the bulb."),
    ]
    vocabulary = frozenset(
        {"pair", "a", "bulb", "bulbs", "with", "the", "app", "hub", "reset", "plans", "and"}
    )

    # "bulb" and "the" are in most documents but are known words; "zigbee" is in two of five.
    assert own_names(chunks, vocabulary) == {"lumora"}


def test_at_most_two_own_names():
    chunks = [_chunk(f"{n}.md", "Lumora Quark Zeptor") for n in range(4)]
    chunks.append(_chunk("last.md", "Lumora Quark"))

    # All three are in at least 80% of the documents; the two most widespread are kept.
    assert own_names(chunks, frozenset()) == {"lumora", "quark"}


def test_a_small_store_has_no_own_names():
    chunks = [_chunk("a.md", "Lumora"), _chunk("b.md", "Lumora")]

    assert own_names(chunks, frozenset()) == frozenset()


def test_without_words_drops_the_name_and_its_possessive():
    names = frozenset({"zulip"})

    assert without_words("Who is Zulip's CEO, and does zulip hire?", names) == (
        "Who is CEO, and does hire?"
    )
    assert without_words("zulipchat and zulip-like apps", names) == "zulipchat and -like apps"
    assert without_words("Zulip?", names) == "Zulip?"  # nothing but punctuation left
    assert without_words("zulip", names) == "zulip"  # nothing else left: unchanged
    assert without_words("anything", frozenset()) == "anything"


def test_unknown_words_are_the_topic_words_no_chunk_uses():
    chunks = [
        _chunk("refunds.md", "You were charged twice for the same period? We refund the charge."),
        _chunk("messages.md", "Send a direct message to anyone in your subscription."),
    ]
    index = _KeywordIndex(chunks, {"DM": ["direct message"]})

    # Greetings, politeness, function words, numbers and short words never count.
    assert (
        index.unknown_words("hi, i got charged twice, can you help me??? thanks asap #12345") == []
    )
    # Nor do interjections: "phew. will it be there on my phone too?" names no topic of its own.
    assert index.unknown_words("phew, ugh... hmm, oops. yikes! tbh idk") == []
    assert index.unknown_words("my subscripton renewal") == ["renewal"]  # a typo is known
    assert index.unknown_words("how do i send a dm") == []  # a configured synonym is known
    assert index.unknown_words("Is my Overdraft refunded by HIPAA?") == ["overdraft", "hipaa"]


PLACE_PRODUCTS = ["slack", "github", "discord", "jira", "microsoft teams | ms teams"]


@pytest.mark.parametrize(
    ("question", "asked"),
    [
        ("how do i mute a channel in slack", ["slack"]),
        ("how do i pin a message in a discord channel so new members see it", ["discord"]),
        ("how do i cancel my slack pro plan before it renews", ["slack"]),
        ("where do i download invoices for our github copilot business seats", ["github"]),
        ("how do i make one of my github repos private", ["github"]),
        ("how do i mute a channel in slack. signing out and in again did not help", ["slack"]),
        ("how do i hide a channel in MS Teams", ["microsoft teams"]),
        # Its account or plan is the other product's even when the question names this one.
        ("now that we're on zulip, how do i cancel our slack subscription", ["slack"]),
    ],
)
def test_a_question_about_another_product_itself(question, asked):
    products = OtherProducts(PLACE_PRODUCTS)

    assert products.asked_about(question, products.named_in(question), ["zulip"]) == asked


@pytest.mark.parametrize(
    "question",
    [
        # Where the customer comes from, or what they connect to.
        "we're moving from slack on the free plan, will our private channels come along?",
        "can i log in with my github account?",
        "can my team use their github accounts to sign in",
        "can our team sign up with only their github accounts?",
        "Is GitLab sign-in on the free plan?",
        "Do I need a paid plan to use my GitHub account for authentication?",
        # Said only by a word shortly before the product.
        "Can I use my GitLab account for this?",
        "is zulip cheaper than my slack plan?",
        "is there a way to star messages as you can in slack?",
        # A profile field that shows an account elsewhere.
        "can each member put their github profile on their user card?",
        # The product's name as part of a longer word.
        "why do messages look odd in slack-ish formatting?",
        "how do i import my slack workspace",
        "we had 40 channels in slack, will they all come across?",
        "the github integration stopped posting in our channel",
        "how can i make PROJ-1234 link to the ticket in our jira?",
        "where in github do i paste the url",
        # A comparison with the other product.
        "in slack i could set a reminder on a message, can i do that here?",
        "is there something like threads like in slack?",
        # The question happens in this product ("zulip"), whatever it says about the other.
        "how do i get zulip notifications in slack",
        # The other product's name only as a kind of thing, or as a place of something else.
        "our grafana only supports slack-style webhooks",
        "put a 'join our chat' badge on our github readme",
    ],
)
def test_a_question_about_how_another_product_meets_this_one(question):
    products = OtherProducts(PLACE_PRODUCTS)

    assert products.asked_about(question, products.named_in(question), ["zulip"]) == []


def test_only_the_names_given_are_looked_at():
    products = OtherProducts(PLACE_PRODUCTS)
    question = "how do i mute a channel in slack or in discord"

    assert products.asked_about(question, ["discord"]) == ["discord"]
    assert products.asked_about(question, []) == []
    assert products.asked_about(question, ["not a listed name"]) == []
