"""The on-disk embedding index: ``gramx embed`` writes it, ``gramx search`` reads it.

:func:`save_embeddings` writes an index folder and :class:`EmbeddingIndex` searches it::

    FOLDER/
      index.json          format, the model (path, fingerprint, dim), the manifest, the rows'
                          ids and labels, and per
                          modality: its files, the rows it is present in, their ids and values
      NAME.npy            float32 [n, dim]: the embeddings of modality NAME where present
      NAME.safetensors    the same with the row numbers, the ids in its metadata

A query searches one modality by cosine similarity, or tuples of several by the model's
score (the Gram volume, triangle area, multilinear product or cosine sum: :mod:`gramx.scores.similarity`).
Only the model that made an index may query it: its
fingerprint (:func:`gramx.model.directory.fingerprint`) and dimension are checked, and an index that
does not record them is refused. Opening an index validates ``index.json`` and checks each
``.npy`` file against it (shape, float32), so a damaged or forged index is an error naming
the file, never a wrong result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from safetensors.numpy import save_file

from gramx.files.atomic import Artefact, atomic_directory
from gramx.files.validation import MAX_WIDTH
from gramx.files.config_files import read_json
from gramx.embed.embedding import Embeddings
from gramx.errors import GramxError
from gramx.model.directory import fingerprint
from gramx.scores.similarity import SCORES
from gramx.files.validation import Section, validate
from gramx.embed.embedding import embed_values

if TYPE_CHECKING:
    from gramx.model.model import GramxModel

__all__ = ["INDEX_NAME", "INDEX", "IndexRecord", "save_embeddings", "Hit", "EmbeddingIndex"]

INDEX_NAME = "index.json"
FORMAT = "gramx-embeddings"
#: An embedding index, recognised by its index.json.
INDEX = Artefact("gramx embedding index", INDEX_NAME, FORMAT, ("*.npy", "*.safetensors"))
_FILE_IN_FOLDER = r"^[^/\\]+$"  # a name, not a path: an index reads only its own folder


class _Record(Section):
    """A part of ``index.json``: strict types, as gramx writes them."""

    model_config = ConfigDict(strict=True)


class IndexedModel(_Record):
    """The model that made an index: only it may query the index."""

    path: str | None = None
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$", description="gramx.model.directory.fingerprint of the model")
    dim: int = Field(ge=2, le=MAX_WIDTH)
    score: str
    modalities: list[str]


class IndexedModality(_Record):
    """One indexed modality: its files and, for each row it is present in, the row's number, id and value."""

    npy: str = Field(pattern=_FILE_IN_FOLDER)
    safetensors: str = Field(pattern=_FILE_IN_FOLDER)
    count: int = Field(ge=1)
    rows: list[int]
    ids: list[str]
    values: list[Any]

    @model_validator(mode="after")
    def _check_counts(self) -> IndexedModality:
        if not len(self.rows) == len(self.ids) == len(self.values) == self.count:
            raise ValueError(f"count is {self.count} but there are {len(self.rows)} rows, {len(self.ids)} ids and "
                             f"{len(self.values)} values")
        if any(a >= b for a, b in zip(self.rows, self.rows[1:])) or (self.rows and self.rows[0] < 0):
            raise ValueError("rows must be distinct row numbers in increasing order")
        return self


class IndexRecord(_Record):
    """The contents of an index's ``index.json``."""

    format: Literal["gramx-embeddings"]
    format_version: Literal[1]
    model: IndexedModel
    manifest: str
    tuples: int = Field(ge=0)
    ids: list[str]
    labels: list[Any]
    modalities: dict[str, IndexedModality]

    @model_validator(mode="after")
    def _check_rows(self) -> IndexRecord:
        if not len(self.ids) == len(self.labels) == self.tuples:
            raise ValueError(f"tuples is {self.tuples} but there are {len(self.ids)} ids and {len(self.labels)} labels")
        beyond = [name for name, m in self.modalities.items() if m.rows and m.rows[-1] >= self.tuples]
        if beyond:
            raise ValueError(f"modality {beyond[0]!r} names rows past the {self.tuples} tuples")
        return self


def _embed_again(folder: Path, manifest: Any = None) -> str:
    manifest = manifest if isinstance(manifest, str) and manifest else "MANIFEST"
    return f"embed the manifest again with the model you search with: gramx embed MODEL {manifest} -o {folder}"


def save_embeddings(emb: Embeddings, folder: str | Path, model: GramxModel, manifest: str | Path,
                    overwrite: bool = False) -> dict:
    """Write ``emb`` (of ``manifest``, embedded by ``model``) as an index at ``folder``; returns ``index.json``.

    Written atomically. The model is recorded by its directory and fingerprint, so it must
    have been loaded from (or saved to) one. An index already at ``folder`` is replaced;
    anything else only with ``overwrite``.
    """
    if model.source is None:
        raise GramxError("an index records the model that made it, and this model was never saved",
                         hint="save it first (model.save_pretrained(DIR)), or embed with gramx.load_model(DIR)")
    index: dict[str, Any] = {
        "format": FORMAT, "format_version": 1,
        "model": {"path": str(model.source), "fingerprint": fingerprint(model.source),
                  "dim": model.dim, "score": model.score, "modalities": model.names},
        "manifest": str(Path(manifest).resolve()), "tuples": len(emb),
        "ids": emb.ids, "labels": emb.labels, "modalities": {},
    }
    with atomic_directory(folder, INDEX, overwrite) as tmp:
        for name in emb.feats:
            rows = emb.masks[name].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            vectors = emb.feats[name][rows].numpy().astype(np.float32)
            ids = [emb.ids[i] for i in rows.tolist()]
            np.save(tmp / f"{name}.npy", vectors)
            save_file({"embeddings": vectors, "rows": rows.numpy().astype(np.int64)},
                      str(tmp / f"{name}.safetensors"), metadata={"ids": json.dumps(ids), "modality": name})
            index["modalities"][name] = {
                "npy": f"{name}.npy", "safetensors": f"{name}.safetensors", "count": len(ids),
                "rows": rows.tolist(), "ids": ids, "values": [emb.values[name][i] for i in rows.tolist()],
            }
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index


@dataclass
class Hit:
    """One search result: its rank, the row's id, its score and the indexed values shown for it."""

    rank: int
    id: str
    score: float
    values: dict[str, Any]


class EmbeddingIndex:
    """An index folder written by :func:`save_embeddings`; :meth:`search` ranks its rows for a query."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = folder, meta

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingIndex:
        """Open the index at ``folder``: ``index.json`` validated, each ``.npy`` checked against it."""
        folder = Path(folder)
        path = folder / INDEX_NAME
        if not path.is_file():
            raise GramxError(f"{folder} is not an embedding index (no {INDEX_NAME})",
                             hint="create one with: gramx embed MODEL MANIFEST -o FOLDER")
        raw = read_json(path, hint=_embed_again(folder))
        manifest = raw.get("manifest") if isinstance(raw, dict) else None
        made_by = raw.get("model") if isinstance(raw, dict) else None
        if isinstance(made_by, str) or (isinstance(made_by, dict) and made_by.get("fingerprint") is None):
            raise GramxError(f"{path}: the index does not record the fingerprint of the model that made it (it was "
                             "written by an older gramx or from an unsaved model), so no query can be checked to be "
                             "in its space", hint=_embed_again(folder, manifest))
        record = validate(IndexRecord, raw, str(path), hint=_embed_again(folder, manifest))
        index = cls(folder, record.model_dump())
        for name in index.modalities:
            index.read_vectors(name, mmap=True)
        return index

    @property
    def modalities(self) -> list[str]:
        """The indexed modalities."""
        return list(self.meta["modalities"])

    def read_vectors(self, name: str, mmap: bool = False) -> np.ndarray:
        """The ``.npy`` array of modality ``name``, checked against ``index.json``; ``mmap``: mapped, not read."""
        entry, dim = self.meta["modalities"][name], self.meta["model"]["dim"]
        path = self.folder / entry["npy"]
        hint = _embed_again(self.folder, self.meta["manifest"])
        if not path.is_file():
            raise GramxError(f"{path}: missing (the index records {entry['count']} {name} vectors there)", hint=hint)
        try:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise GramxError(f"{path}: not a readable .npy array ({exc})", hint=hint) from None
        if array.dtype != np.float32 or array.shape != (entry["count"], dim):
            raise GramxError(f"{path}: holds {array.dtype} vectors of shape {tuple(array.shape)}, but {INDEX_NAME} "
                             f"records {entry['count']} float32 vectors of {dim} dimensions", hint=hint)
        return array

    def vectors(self, name: str) -> torch.Tensor:
        """The embeddings of modality ``name``, one row per row it is present in."""
        return torch.from_numpy(self.read_vectors(name))

    def check_model(self, model: GramxModel) -> None:
        """Refuse a model other than the one that made the index (by dimension and fingerprint)."""
        made_by = self.meta["model"]
        theirs = made_by["path"] or "another model"
        hint = "search with the model that made the index, or " + _embed_again(self.folder, self.meta["manifest"])
        if model.source is None:
            raise GramxError(f"the index at {self.folder} was made by {theirs}; this model was never saved, so it "
                             "cannot be checked to be that model", hint=hint)
        if made_by["dim"] != model.dim:
            raise GramxError(f"the index at {self.folder} was made by {theirs} ({made_by['dim']} dimensions); "
                             f"{model.source} embeds in {model.dim}", hint=hint)
        if fingerprint(model.source) != made_by["fingerprint"]:
            raise GramxError(f"the index at {self.folder} was made by {theirs}, not by {model.source} (their weights "
                             "differ), so its vectors and the query's would live in different spaces", hint=hint)

    def candidates(self, query_modality: str, names: list[str] | None = None) -> list[str]:
        """The candidate modalities: ``names`` (checked), else every indexed one but the query's."""
        chosen = names or [m for m in self.modalities if m != query_modality]
        unknown = [m for m in chosen if m not in self.modalities]
        if unknown or not chosen:
            raise GramxError(f"the index has no modality {', '.join(unknown) or '(none chosen)'}",
                             hint=f"indexed modalities: {', '.join(self.modalities)}")
        return chosen

    def search(self, query: torch.Tensor, names: list[str], k: int = 10, score: str = "volume",
               ) -> tuple[str, list[Hit]]:
        """The ``k`` best rows for one embedded ``query`` ``[1, dim]``: ``(score name, hits)``.

        One candidate modality is ranked by cosine similarity, several by ``score`` of the
        query with the row's tuple (:data:`gramx.scores.similarity.SCORES`), over the rows that
        have all of them; best first.
        """
        meta = self.meta["modalities"]
        if len(names) == 1:
            scores = (query @ self.vectors(names[0]).T)[0]
            top = scores.topk(min(k, scores.numel()))
            rows = [meta[names[0]]["rows"][i] for i in top.indices.tolist()]
            score_name, scored = "cosine", list(zip(rows, top.values.tolist()))
        else:
            common = sorted(set.intersection(*(set(meta[m]["rows"]) for m in names)))
            if not common:
                raise GramxError(f"no indexed tuple has all of {', '.join(names)}")
            position = {m: {r: i for i, r in enumerate(meta[m]["rows"])} for m in names}
            tuples = torch.stack([self.vectors(m)[[position[m][r] for r in common]] for m in names], dim=1)
            values, idx = SCORES[score].index(tuples).search(query, k=k)
            score_name, scored = score, [(common[i], v) for v, i in zip(values[0].tolist(), idx[0].tolist())]
        hits = []
        for rank, (row, score) in enumerate(scored, start=1):
            shown = {m: meta[m]["values"][meta[m]["rows"].index(row)] for m in names if row in meta[m]["rows"]}
            hits.append(Hit(rank, self.meta["ids"][row], score, shown))
        return score_name, hits

    def query(self, model: GramxModel, value: Any, modality: str, names: list[str] | None = None,
              k: int = 10) -> tuple[str, list[Hit]]:
        """Embed ``value`` of ``modality`` with ``model`` (checked to be the index's) and :meth:`search`.

        ``names``: the candidate modalities (default: every indexed one but the query's).
        """
        self.check_model(model)
        return self.search(embed_values(model, modality, [value]), self.candidates(modality, names), k=k,
                           score=model.score)
