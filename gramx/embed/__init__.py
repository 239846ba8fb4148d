"""Embedding with a trained model: manifests and raw values into the shared space."""

from gramx.embed.embedding import Embeddings, embed_manifest, embed_values

__all__ = ["Embeddings", "embed_manifest", "embed_values"]
