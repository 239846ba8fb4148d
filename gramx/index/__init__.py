"""Embedding indexes: what ``gramx embed`` writes and ``gramx search`` reads."""

from gramx.index.store import EmbeddingIndex, Hit, save_embeddings

__all__ = ["EmbeddingIndex", "Hit", "save_embeddings"]
