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
