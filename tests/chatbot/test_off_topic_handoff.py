"""The off-topic check with the real embedder, the bundled examples and a real Chroma store."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from langchain_core.embeddings import Embeddings

from chatbot.evaluation import load_questions
from chatbot.history import Turn, turns_from_dicts
from chatbot.query import search_queries
from chatbot.service import NO_MATCH, OFF_TOPIC, ChatService, create_service
from knowledge.ingest import ingest_paths
from knowledge.off_topic import BUNDLED_EXAMPLES, BUNDLED_PRODUCTS, OffTopicExamples, OtherProducts
from knowledge.retriever import HybridRetriever, WeightedQuery, WordCoverage
from knowledge.store import KnowledgeStore
from tests.conftest import REPO, SAMPLE_HELP

pytestmark = pytest.mark.slow

# Questions about other products that share words with the sample help center (a smart-lighting
# company): each reaches the relevance threshold on some article.
OTHER_PRODUCTS = [
    "my xbox controller wont pair anymore",
    "the nest thermostat keeps going offline",
    "how do i turn on dark mode in outlook",
]


@pytest.fixture(scope="module")
def examples(embeddings, tmp_path_factory) -> OffTopicExamples:
    return OffTopicExamples.from_file(
        BUNDLED_EXAMPLES, embeddings, cache_dir=tmp_path_factory.mktemp("cache")
    )


class CountingEmbeddings(Embeddings):
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embeddings):
        self.inner = inner
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        return self.inner.embed_query(text)


def _service(settings, store, examples=None, products=None) -> ChatService:
    retriever = HybridRetriever(store, off_topic=examples, other_products=products)
    return ChatService(settings, store, retriever, None)


@pytest.fixture(scope="module")
def products() -> OtherProducts:
    return OtherProducts.from_file(BUNDLED_PRODUCTS)


# Close to the sample help center's two-factor article; only the name says it is about GitHub.
GITHUB_QUESTION = "how do i turn on two-factor authentication for my github account"


@pytest.mark.parametrize("question", OTHER_PRODUCTS)
def test_a_question_about_another_product_is_handed_off(settings, sample_store, examples, question):
    found = _service(settings, sample_store, examples).retrieve(question)

    assert found.handoff and found.reason == OFF_TOPIC
    best = max(h.similarity for h in found.hits)
    assert best >= settings.retrieval.relevance_threshold  # the threshold alone would answer it
    assert found.off_topic.lead > settings.retrieval.off_topic_margin
    # Without the examples the same question would go to the model.
    assert not _service(settings, sample_store).retrieve(question).handoff


def test_a_question_naming_a_product_no_document_mentions_is_handed_off(
    settings, sample_store, examples, products
):
    found = _service(settings, sample_store, examples, products).retrieve(GITHUB_QUESTION)

    assert found.handoff and found.reason == OFF_TOPIC
    assert found.other_products == ("github",)
    assert found.hits[0].source.endswith("two-factor-authentication.md")
    assert found.hits[0].similarity > settings.retrieval.relevance_threshold + 0.2
    # The examples alone would have the model answer it from the two-factor article.
    assert not _service(settings, sample_store, examples).retrieve(GITHUB_QUESTION).handoff


def test_a_product_question_far_from_every_article_is_off_topic_not_a_failed_search(
    settings, sample_store, examples, products
):
    question = "how do i change my profile photo on linkedin"
    found = _service(settings, sample_store, examples, products).retrieve(question)

    assert found.reason == OFF_TOPIC and found.other_products == ("linkedin",)
    # Without the product names the search alone finds nothing (and a ticket would open).
    assert _service(settings, sample_store, examples).retrieve(question).reason == NO_MATCH


def test_a_product_the_documents_mention_is_theirs_to_answer(
    settings, embeddings, examples, products, tmp_path, caplog
):
    help_dir = tmp_path / "help"
    shutil.copytree(SAMPLE_HELP, help_dir)
    store = KnowledgeStore(tmp_path / "store", embeddings)
    assert ingest_paths(store, [help_dir]).ok
    service = _service(settings, store, examples, products)
    assert service.retrieve(GITHUB_QUESTION).other_products == ("github",)

    (help_dir / "sign-in-with-github.md").write_text(
        "# Sign in with GitHub\n\nYou can sign in to the Lumora app with your GitHub account. "
        "Lumora never sees your GitHub password; two-factor authentication for that account "
        "is set up on GitHub's own security settings page.\n",
        encoding="utf-8",
    )
    assert ingest_paths(store, [help_dir]).ok

    with caplog.at_level("INFO", logger="knowledge.retriever"):
        found = service.retrieve(GITHUB_QUESTION)  # the same service, after the ingest
    assert not found.handoff and found.other_products == ()
    assert found.hits[0].source.endswith("sign-in-with-github.md")
    # The log of the index build says which names are set aside.
    assert "your documents mention github" in caplog.text


@pytest.fixture(scope="module")
def slack_store(embeddings, tmp_path_factory) -> KnowledgeStore:
    """The sample help center with two articles that mention Slack, one of them by title."""
    return _sample_store_with(
        tmp_path_factory.mktemp("slack"),
        embeddings,
        {
            "alerts-in-other-apps.md": "# Alerts in your team chat\n\nLumora can post an alert "
            "to a Slack channel when a light goes offline or a schedule fails. Add the Slack app "
            "from the Lumora settings page, pick the channel, and choose which alerts to post.\n",
            "sign-in-with-slack.md": "# Sign in with Slack\n\nYou can sign in to the Lumora app "
            "with your Slack account. Lumora never sees your Slack password: to change or reset "
            "it, use Slack's own sign-in page, then sign in to Lumora again.\n",
        },
    )


def _sample_store_with(root, embeddings, articles: dict[str, str]) -> KnowledgeStore:
    """A store of the sample help center and ``articles`` (file name: Markdown)."""
    help_dir = root / "help"
    shutil.copytree(SAMPLE_HELP, help_dir)
    for name, text in articles.items():
        (help_dir / name).write_text(text, encoding="utf-8")
    store = KnowledgeStore(root / "store", embeddings)
    assert ingest_paths(store, [help_dir]).ok
    return store


def test_a_question_about_a_mentioned_product_itself_is_handed_off(
    settings, slack_store, examples, products
):
    service = _service(settings, slack_store, examples, products)

    found = service.retrieve("how do i mute a channel in slack")

    assert found.handoff and found.reason == OFF_TOPIC
    assert found.other_products == ("slack",) and found.product_itself
    assert found.hits[0].source.endswith("alerts-in-other-apps.md")
    result = service.retrieval_only("how do i cancel my slack pro plan").to_dict()
    assert result["handoff_reason"] == OFF_TOPIC and result["product_itself"]
    assert result["other_products"] == ["slack"]


@pytest.mark.parametrize(
    ("question", "article"),
    [
        ("how do i get lumora alerts posted in slack?", "alerts-in-other-apps.md"),
        ("can i sign in to the app with my slack account?", "sign-in-with-slack.md"),
    ],
)
def test_a_question_about_how_a_mentioned_product_meets_this_one_is_answered(
    settings, slack_store, examples, products, question, article
):
    found = _service(settings, slack_store, examples, products).retrieve(question)

    assert not found.handoff and found.other_products == ()
    assert found.hits[0].source.endswith(article)


def test_an_article_about_the_product_found_first_may_answer_its_own_questions(
    settings, slack_store, examples, products
):
    question = "how do i reset my slack password"
    found = _service(settings, slack_store, examples, products).retrieve(question)

    assert found.hits[0].source.endswith("sign-in-with-slack.md")
    assert not found.handoff and not found.product_itself


def test_the_sample_questions_keep_their_answers(settings, sample_store, examples, products):
    service = _service(settings, sample_store, examples, products)
    questions = map(
        json.loads, (REPO / "knowledge" / "sample_questions.jsonl").read_text().splitlines()
    )
    for question in questions:
        if question["kind"] == "out_of_scope":
            continue
        history = turns_from_dicts(question.get("history", []))
        found = service.retrieve(question["question"], history)
        assert not found.handoff, (question["id"], found.off_topic)


GENERIC = load_questions(REPO / "tests" / "data" / "generic_service_questions.jsonl")


@pytest.mark.parametrize("question", [q.question for q in GENERIC])
def test_a_generic_service_question_is_off_topic_only_if_no_article_has_its_words(
    settings, sample_store, examples, question
):
    # Billing examples about other companies ("chase charged me an overdraft fee twice") can
    # come closer than the refund article; a question in the help center's own words stays.
    found = _service(settings, sample_store, examples).retrieve(question)

    if question == "the app keeps crashing":  # no Lumora article speaks of crashes
        assert found.reason == OFF_TOPIC and found.off_topic.unknown_words == ("crashing",)
    else:
        assert found.reason != OFF_TOPIC, found.off_topic


@pytest.mark.parametrize(
    "question",
    [
        "i got charged twice",
        "hi, i was charged twice, can you help me??? thanks",
        "my subscripton was cancelled",
    ],
)
def test_chatty_words_and_typos_do_not_make_a_question_off_topic(
    settings, sample_store, examples, question
):
    found = _service(settings, sample_store, examples).retrieve(question)

    assert found.reason != OFF_TOPIC, found.off_topic
    assert found.off_topic is None, "every word is in the documents: no comparison was made"


def test_a_question_in_the_documents_own_words_is_not_compared_with_the_examples(
    settings, sample_store, examples, monkeypatch
):
    service = _service(settings, sample_store, examples)

    def compared(*args):
        raise AssertionError("compared with the off-topic examples")

    monkeypatch.setattr(service.retriever, "closest_off_topic", compared)
    found = service.retrieve("how long do i hold the reset button on the hub")
    assert not found.handoff and found.off_topic is None
    with pytest.raises(AssertionError, match="compared with the off-topic examples"):
        service.retrieve("how do i reset my xbox controller")


def test_a_follow_up_naming_the_product_only_in_the_answer_costs_no_extra_embedding(
    settings, sample_store, examples
):
    counting = CountingEmbeddings(sample_store.embeddings)
    retriever = HybridRetriever(sample_store, off_topic=examples)
    history = [
        Turn("user", "how do i pair a new bulb"),
        Turn("assistant", "Open the Lumora app and tap Add device; Lumora finds the bulb."),
    ]
    queries = search_queries("and a light strip?", history, settings.retrieval.history_weight)
    vector = retriever.query_vector(queries)
    sample_store.embeddings = counting
    try:
        match = retriever.closest_off_topic(queries, vector)
    finally:
        sample_store.embeddings = counting.inner

    assert counting.calls == 0
    assert match.without == ()


def test_the_product_name_is_found_in_the_store(settings, sample_store, examples):
    assert _service(settings, sample_store, examples).retriever.own_names() == {"lumora"}


def test_a_question_about_the_company_is_compared_without_its_name(
    settings, sample_store, examples
):
    question = "who is the ceo of lumora and where is the company headquartered?"
    found = _service(settings, sample_store, examples).retrieve(question)

    assert found.handoff and found.reason == OFF_TOPIC
    assert "ceo" in found.off_topic.example
    assert found.off_topic.without == ("lumora",)
    assert "ceo" in found.off_topic.unknown_words
    # "lumora" brought every article closer; without it the best one is far away.
    assert found.off_topic.document_similarity < max(h.similarity for h in found.hits) - 0.2


@pytest.mark.parametrize(
    "question",
    ["is lumora down right now", "lumora app keeps crashing", "does lumora work with my echo dot"],
)
def test_a_short_question_naming_the_product_is_still_answered(
    settings, sample_store, examples, question
):
    assert not _service(settings, sample_store, examples).retrieve(question).handoff


def test_far_from_everything_is_still_a_plain_no_match(settings, sample_store, examples):
    found = _service(settings, sample_store, examples).retrieve("who won the super bowl last year")

    assert found.handoff and found.reason == NO_MATCH


def test_a_store_that_covers_the_topic_answers_it(settings, embeddings, examples, tmp_path):
    store = _sample_store_with(
        tmp_path,
        embeddings,
        {
            "game-controllers.md": "# Pairing a game controller\n\n"
            "Lumora's TV light bars follow the game on screen. If your Xbox or PS5 controller "
            "won't pair with the console after a reset, hold the pair button for five seconds, "
            "then connect it with a USB cable once.\n"
        },
    )

    found = _service(settings, store, examples).retrieve(OTHER_PRODUCTS[0])

    assert not found.handoff
    assert found.hits[0].source.endswith("game-controllers.md")
    assert "controller" not in found.off_topic.example  # the console examples were set aside


def test_create_service_uses_the_configured_list(settings, tmp_path):
    own = tmp_path / "ours.txt"
    own.write_text("# our own list\nhow do i reset my xbox controller\n", encoding="utf-8")
    settings.retrieval.off_topic_examples = own
    service = create_service(settings, with_model=False)
    try:
        assert ingest_paths(service.store, [SAMPLE_HELP / "pair-a-new-bulb.md"]).ok
        queries = [WeightedQuery(OTHER_PRODUCTS[0])]
        vector = service.retriever.query_vector(queries)
        match = service.retriever.closest_off_topic(queries, vector)
        assert match.example == "how do i reset my xbox controller"
        assert match.similarity > 0.5
        assert list((settings.data_dir / "cache").glob("off_topic-*.npy"))
    finally:
        service.close()


def test_create_service_uses_the_configured_product_names(settings, tmp_path):
    own = tmp_path / "products.txt"
    own.write_text("# our own list\nAcme  Cloud\n", encoding="utf-8")
    settings.retrieval.other_products = own
    service = create_service(settings, with_model=False)
    try:
        assert ingest_paths(service.store, [SAMPLE_HELP]).ok
        found = service.retrieve("how do i turn on two-factor authentication for acme cloud")
        assert found.reason == OFF_TOPIC and found.other_products == ("acme cloud",)
        assert not service.retrieve(GITHUB_QUESTION).other_products  # not on this list
    finally:
        service.close()


def test_the_check_can_be_switched_off(settings):
    settings.retrieval.off_topic_check = False
    service = create_service(settings, with_model=False)
    try:
        assert service.retriever.off_topic is None
        assert service.retriever.other_products is None
        assert service.off_topic is None
        assert ingest_paths(service.store, [SAMPLE_HELP]).ok
        found = service.retrieve(OTHER_PRODUCTS[0])
        assert not found.handoff and found.off_topic is None
        assert not service.retrieve(GITHUB_QUESTION).handoff
    finally:
        service.close()


def test_a_nearest_chunk_that_is_not_live_yet_is_skipped(settings, embeddings, tmp_path):
    store = KnowledgeStore(tmp_path / "store", embeddings)
    assert ingest_paths(store, [SAMPLE_HELP]).ok
    examples = OffTopicExamples.from_file(BUNDLED_EXAMPLES, embeddings)
    question = "my xbox controller wont pair anymore"
    before = _service(settings, store, examples).retrieve(question)
    # An ingest between writing its chunks and committing them: the same text, not live yet.
    store._chroma()[0].upsert(
        ids=["00:pending:0"],
        embeddings=[embeddings.embed_query(question)],
        documents=[question],
        metadatas=[
            {
                "doc_id": "00",
                "version": "pending",
                "source": "new.md",
                "title": "New",
                "heading": "",
                "chunk": 0,
            }
        ],
    )

    after = _service(settings, store, examples).retrieve(question)

    assert after.off_topic.document_similarity == pytest.approx(
        before.off_topic.document_similarity, abs=1e-6
    )
    assert after.handoff == before.handoff


def test_the_reason_is_kept_with_the_conversation(settings, sample_store, examples):
    service = _service(settings, sample_store, examples)  # no model: a model call would fail
    session = service.start_session()

    events = list(service.stream(OTHER_PRODUCTS[0], session_id=session))

    assert events[-1].result.handoff_reason == OFF_TOPIC
    answer = service.conversations.turns(session)[-1]
    assert answer.role == "assistant" and answer.meta["handoff_reason"] == OFF_TOPIC


def test_the_products_named_are_kept_with_the_result_and_the_conversation(
    settings, sample_store, products
):
    service = _service(settings, sample_store, products=products)  # no model: a call would fail

    assert service.retrieval_only(GITHUB_QUESTION).to_dict()["other_products"] == ["github"]
    session = service.start_session()
    events = list(service.stream(GITHUB_QUESTION, session_id=session))

    result = events[-1].result
    assert result.handoff_reason == OFF_TOPIC and result.other_products == ["github"]
    answer = service.conversations.turns(session)[-1]
    assert answer.meta["other_products"] == ["github"]
    assert service.retrieval_only("how do i reset the hub").other_products == []


def test_a_change_of_the_product_name_found_in_the_documents_is_logged(
    settings, embeddings, examples, tmp_path, caplog
):
    store = KnowledgeStore(tmp_path / "data", embeddings)
    ingest_paths(store, [SAMPLE_HELP])
    retriever = _service(settings, store, examples).retriever
    assert retriever.own_names() == {"lumora"}
    # Another team's documents, none naming the product: it is no longer in most of them.
    policies = tmp_path / "policies"
    policies.mkdir()
    for n in range(10):
        text = f"# Office policy {n}\n\nRule {n} covers holidays, travel and expenses.\n"
        (policies / f"policy-{n}.md").write_text(text)
    ingest_paths(store, [policies])

    with caplog.at_level(logging.WARNING, logger="knowledge.retriever"):
        names = retriever.own_names()

    assert names == frozenset()
    assert "changed from lumora to none" in caplog.text
    assert "retrieval.product_names" in caplog.text


QUESTION_IN_KNOWN_WORDS = "what is the release date of your next version"


def test_a_question_in_known_words_no_passage_holds_is_off_topic_when_far_closer_to_an_example(
    settings, sample_store, examples
):
    service = _service(settings, sample_store, examples)
    question = QUESTION_IN_KNOWN_WORDS
    assert service.retriever.unknown_words(question) == []
    assert service.retriever.word_coverage(question) == WordCoverage(1, 4)

    found = service.retrieve(question)

    assert found.handoff and found.reason == OFF_TOPIC
    assert found.off_topic.unknown_words == ()
    assert found.off_topic.lead > settings.retrieval.off_topic_known_words_margin
    # With that margin at 0, a question in the documents' own words is never compared.
    never = settings.model_copy(
        update={
            "retrieval": settings.retrieval.model_copy(update={"off_topic_known_words_margin": 0.0})
        }
    )
    assert _service(never, sample_store, examples).retrieve(question).reason != OFF_TOPIC


@pytest.mark.parametrize(
    "question",
    [
        # One passage holds all its words: the refund article says "You were charged twice for
        # the same period", though "chase charged me an overdraft fee twice for the same
        # transaction" is far closer than any passage.
        "i was charged twice",
        # Two topic words, in two passages of the privacy article: an example about a
        # company's headquarters is 0.32 closer.
        "does your company know my location",
    ],
)
def test_a_question_in_known_words_stays_however_close_an_example_comes(
    settings, sample_store, examples, question
):
    service = _service(settings, sample_store, examples)
    queries = [WeightedQuery(question)]
    match = service.retriever.closest_off_topic(queries, service.retriever.query_vector(queries))
    assert match.lead > settings.retrieval.off_topic_known_words_margin
    assert service.retriever.unknown_words(question) == []

    found = service.retrieve(question)

    assert found.reason != OFF_TOPIC, found.off_topic
    assert found.off_topic is None, "not compared with the examples"


def test_the_product_name_is_no_topic_word(settings, sample_store, examples):
    service = _service(settings, sample_store, examples)

    assert service.retriever.word_coverage("lumora charged me twice") == WordCoverage(2, 2)


def test_a_follow_up_without_the_product_name_is_compared_once(
    settings, sample_store, examples, monkeypatch
):
    retriever = HybridRetriever(sample_store, off_topic=examples)
    history = [Turn("user", "how do i pair a new bulb"), Turn("assistant", "Tap Add device.")]
    queries = search_queries("what about a light strip?", history, 0.5)
    vector = retriever.query_vector(queries)
    searched = []
    monkeypatch.setattr(retriever, "query_vector", lambda q: searched.append(q) or vector)

    match = retriever.closest_off_topic(queries, vector)

    assert searched == [], "no name was left out, so nothing is searched again"
    assert match is not None and match.without == ()
