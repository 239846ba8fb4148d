"""Test helpers for plugins built on gramx-text: a tiny, randomly initialised BERT on disk.

    from gramx_text.testing import save_tiny_bert

    def test_fast(tmp_path):
        cfg = MyConfig(model=save_tiny_bert(tmp_path / "bert"))

The model is a 2-layer BERT with hidden size 32 (about 1M parameters, mostly the
embedding table) and the tokenizer of the bundled all-MiniLM-L6-v2, so tests exercise the
real loading path (``from_pretrained`` on a directory) in well under a second, offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gramx_text.encoder import bundled_model_dir

__all__ = ["save_tiny_bert", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_tiny_bert(path: str | Path, hidden_size: int = 32, layers: int = 2, max_positions: int = 64, seed: int = 0) -> str:
    """Write a random BERT (``save_pretrained``) plus MiniLM's tokenizer files into ``path``; return it."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, max_position_embeddings=max_positions,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_model_dir() / name, path / name)
    return str(path)
