"""Questions naming a regulation or certification the documents never mention go to a person."""

from __future__ import annotations

import pytest

from chatbot.prompts import HANDOFF_ANSWER
from chatbot.service import NO_MATCH, OFF_TOPIC, ChatResult, ChatService
from chatbot.settings import SettingsError, load_settings
from knowledge.off_topic import (
    BUNDLED_COMPLIANCE,
    BUNDLED_PRODUCTS,
    ComplianceNames,
    OffTopicExamplesError,
    OtherProducts,
    read_compliance_names,
)
from knowledge.retriever import HybridRetriever
from tests.conftest import TEST_PROFILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compliance() -> ComplianceNames:
    return ComplianceNames(read_compliance_names(BUNDLED_COMPLIANCE))


def test_only_names_no_document_mentions_count(sample_store, compliance):
    retriever = HybridRetriever(sample_store, compliance=compliance)

    # The sample help center's privacy article names GDPR and CCPA.
    assert retriever.unmentioned_compliance("is Lumora GDPR compliant?") == ()
    assert retriever.unmentioned_compliance("are you ccpa compliant") == ()
    assert retriever.unmentioned_compliance("is Lumora HIPAA compliant?") == ("hipaa",)
    assert retriever.unmentioned_compliance("our HIPAA policy says: how do i delete my data?") == ()
    # The product's own name is the vendor even with the off-topic check off.
    assert retriever.unmentioned_compliance("Does Lumora meet HIPAA requirements?") == ("hipaa",)


def _service(settings, store, compliance) -> ChatService:
    return ChatService(settings, store, HybridRetriever(store, compliance=compliance), None)


def test_such_a_question_is_handed_to_a_person_without_a_model_call(
    settings, sample_store, compliance
):
    question = "Is Lumora HIPAA compliant? We're a small clinic. Will you sign a BAA?"
    service = _service(settings, sample_store, compliance)

    found = service.retrieve(question)
    # No model: answering would fail. The hand-off is the one for what the documents lack, so
    # the web chat opens a ticket for it (handoff.on_no_answer).
    result = service.retrieval_only(question)

    assert found.handoff and found.reason == NO_MATCH
    assert found.compliance == ("hipaa", "baa")
    best = max(h.similarity for h in found.hits)
    assert best >= settings.retrieval.relevance_threshold, "the threshold alone would answer it"
    assert result.handoff and result.compliance == ["hipaa", "baa"]
    assert result.to_dict()["compliance"] == ["hipaa", "baa"]
    # Without the check the same question goes on to the model.
    assert not _service(settings, sample_store, None).retrieve(question).handoff


@pytest.mark.parametrize(
    "question",
    [
        # A regulation the documents cover, and one given only as the customer's reason.
        "is lumora gdpr compliant? how do i make a GDPR request for my data?",
        "our HIPAA policy says we must be able to delete personal data. how do i request that?",
    ],
)
def test_a_question_the_documents_can_answer_is_answered(
    settings, sample_store, compliance, question
):
    found = _service(settings, sample_store, compliance).retrieve(question)

    assert not found.handoff and not found.compliance
    assert found.hits[0].source == "privacy-and-data.md"


def test_the_check_is_on_by_default_and_can_be_turned_off_or_given_another_list(
    tmp_path, monkeypatch
):
    from chatbot.service import create_service

    default = create_service(load_settings(TEST_PROFILE, data_dir=tmp_path), with_model=False)
    assert "hipaa" in default.retriever.compliance.names
    own = tmp_path / "names.txt"
    own.write_text("# ours\nacme seal | acme-seal\n")
    monkeypatch.setenv("CHATBOT_RETRIEVAL__COMPLIANCE_NAMES", str(own))
    listed = create_service(load_settings(TEST_PROFILE, data_dir=tmp_path), with_model=False)
    assert listed.retriever.compliance.names == ["acme seal"]
    monkeypatch.setenv("CHATBOT_RETRIEVAL__COMPLIANCE_CHECK", "false")
    off = create_service(load_settings(TEST_PROFILE, data_dir=tmp_path), with_model=False)
    assert off.retriever.compliance is None


def test_a_names_file_that_cannot_be_used_stops_start_up(tmp_path, monkeypatch):
    empty = tmp_path / "names.txt"
    empty.write_text("# nothing but a comment\n")
    monkeypatch.setenv("CHATBOT_RETRIEVAL__COMPLIANCE_NAMES", str(empty))

    with pytest.raises(SettingsError, match="compliance_names") as caught:
        load_settings(TEST_PROFILE, data_dir=tmp_path)
    assert "holds no compliance names" in str(caught.value)
    with pytest.raises(OffTopicExamplesError, match="cannot read compliance names"):
        read_compliance_names(tmp_path / "missing.txt")


def test_the_playground_says_why():
    from ui.playground import prompt_text

    result = ChatResult(
        answer=HANDOFF_ANSWER,
        sources=[],
        handoff=True,
        handoff_reason=NO_MATCH,
        compliance=["hipaa", "soc 2", "baa"],
    )

    text = prompt_text(result, 0.3)

    assert text.startswith(
        "No model call: the question asks about the company's own standing on 'hipaa', "
        "'soc 2' and 'baa' (compliance"
    )
    assert "relevance threshold" not in text


def test_another_products_compliance_is_that_products_question(settings, sample_store, compliance):
    retriever = HybridRetriever(
        sample_store,
        compliance=compliance,
        other_products=OtherProducts.from_file(BUNDLED_PRODUCTS),
    )
    service = ChatService(settings, sample_store, retriever, None)

    found = service.retrieve("is microsoft teams hipaa compliant?")

    # Off-topic (no ticket by default), not a question for the vendor's compliance team.
    assert found.handoff and found.reason == OFF_TOPIC
    assert found.other_products == ("microsoft teams",) and found.compliance == ()


def test_a_product_name_in_the_settings_is_the_vendor_too(sample_store, compliance):
    question = "Is Acme HIPAA compliant?"
    named = HybridRetriever(sample_store, compliance=compliance, product_names=["acme"])

    assert {"acme", "lumora"} <= named.own_names()
    assert named.unmentioned_compliance(question) == ("hipaa",)
    assert (
        HybridRetriever(sample_store, compliance=compliance).unmentioned_compliance(question) == ()
    )


def test_product_names_are_single_words(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATBOT_RETRIEVAL__PRODUCT_NAMES", '["Acme"]')
    assert load_settings(TEST_PROFILE, data_dir=tmp_path).retrieval.product_names == ["acme"]

    monkeypatch.setenv("CHATBOT_RETRIEVAL__PRODUCT_NAMES", '["Help Scout"]')
    with pytest.raises(SettingsError, match="product_names") as refused:
        load_settings(TEST_PROFILE, data_dir=tmp_path)
    assert "one word of letters" in str(refused.value)
