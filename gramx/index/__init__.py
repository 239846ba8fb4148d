"""Embedding indexes: written in batches by ``gramx embed``, searched in chunks by ``gramx search`` and the server."""

from gramx.index.reader import EmbeddingIndex, Hit
from gramx.index.writer import IndexWriter

__all__ = ["EmbeddingIndex", "Hit", "IndexWriter"]
