"""The on-disk embedding index: ``gramx embed`` writes it, ``gramx search`` reads it.

:func:`save_embeddings` writes an index folder and :class:`EmbeddingIndex` searches it::

    FOLDER/
      index.json          format, the model (path, fingerprint, dim), the manifest, the rows'
                          ids and labels, and per
                          modality: its files, the rows it is present in, their ids and values
      NAME.npy            float32 [n, dim]: the embeddings of modality NAME where present
      NAME.safetensors    the same with the row numbers, the ids in its metadata

A query searches one modality by cosine similarity, or tuples of several by the model's
score (the Gram volume, triangle area, multilinear product or cosine sum: :mod:`gramx.similarity`).
Only the model that made an index may query it: its
fingerprint (:func:`gramx.model_dir.fingerprint`) and dimension are checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.numpy import save_file

from gramx.atomic import Artefact, atomic_directory
from gramx.embed import Embeddings
from gramx.errors import GramxError
from gramx.model_dir import fingerprint
from gramx.similarity import SCORES

if TYPE_CHECKING:
    from gramx.model import GramxModel

__all__ = ["INDEX_NAME", "INDEX", "save_embeddings", "Hit", "EmbeddingIndex"]

INDEX_NAME = "index.json"
FORMAT = "gramx-embeddings"
#: An embedding index, recognised by its index.json.
INDEX = Artefact("gramx embedding index", INDEX_NAME, FORMAT, ("*.npy", "*.safetensors"))


def save_embeddings(emb: Embeddings, folder: str | Path, model: GramxModel, manifest: str | Path,
                    overwrite: bool = False) -> dict:
    """Write ``emb`` (of ``manifest``, embedded by ``model``) as an index at ``folder``; returns ``index.json``.

    Written atomically. The model is recorded by its directory and fingerprint when it was
    loaded from (or saved to) one. An index already at ``folder`` is replaced; anything else
    only with ``overwrite``.
    """
    index: dict[str, Any] = {
        "format": FORMAT, "format_version": 1,
        "model": {"path": str(model.source) if model.source else None,
                  "fingerprint": fingerprint(model.source) if model.source else None,
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
        """Open the index at ``folder``."""
        folder = Path(folder)
        path = folder / INDEX_NAME
        if not path.is_file():
            raise GramxError(f"{folder} is not an embedding index (no {INDEX_NAME})",
                             hint="create one with: gramx embed MODEL MANIFEST -o FOLDER")
        return cls(folder, json.loads(path.read_text(encoding="utf-8")))

    @property
    def modalities(self) -> list[str]:
        """The indexed modalities."""
        return list(self.meta["modalities"])

    def vectors(self, name: str) -> torch.Tensor:
        """The embeddings of modality ``name``, one row per row it is present in."""
        return torch.from_numpy(np.load(self.folder / self.meta["modalities"][name]["npy"]))

    def check_model(self, model: GramxModel) -> None:
        """Refuse a model other than the one that made the index (by fingerprint, or by dimension)."""
        made_by = self.meta.get("model") or {}
        if not isinstance(made_by, dict):  # format of gramx 0.1.0 before fingerprints: the path only
            made_by = {"path": made_by, "dim": self.meta.get("dim")}
        theirs = made_by.get("path") or "an unsaved model"
        ours = str(model.source) if model.source else "this unsaved model"
        if made_by.get("dim") is not None and made_by["dim"] != model.dim:
            raise GramxError(f"the index at {self.folder} was made by {theirs} ({made_by['dim']} dimensions); "
                             f"{ours} embeds in {model.dim}", hint="search with the model that made the index, "
                             "or embed the manifest again with this model (gramx embed)")
        if made_by.get("fingerprint") and model.source and fingerprint(model.source) != made_by["fingerprint"]:
            raise GramxError(f"the index at {self.folder} was made by {theirs}, not by {ours} (their weights "
                             "differ), so its vectors and the query's would live in different spaces",
                             hint="search with the model that made the index, or embed the manifest again "
                             "with this model (gramx embed)")

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
        query with the row's tuple (:data:`gramx.similarity.SCORES`), over the rows that
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
        return self.search(model.embed_values(modality, [value]), self.candidates(modality, names), k=k,
                           score=model.score)
