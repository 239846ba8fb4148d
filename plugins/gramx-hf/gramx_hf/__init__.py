"""gramx plugin: start from the pretrained spaces users already have.

- ``gramx import DIR -o MODEL_DIR`` (:func:`import_space`): a local CLIP, SigLIP or CLAP
  checkpoint becomes a gramx model directory whose ``text`` and ``image`` / ``audio``
  modalities reproduce the checkpoint's embeddings (:mod:`gramx_hf.importer`);
- :class:`TowerEncoder`: one tower of such a model, which gramx-text, gramx-video and
  gramx-audio build for ``output: projected`` (:mod:`gramx_hf.towers`);
- LoRA through peft for ``modalities.NAME.lora`` of a run file, on any encoder that names its
  pretrained weights (:mod:`gramx_hf.lora`).

It registers no modality. transformers and peft are imported only when needed, so plugin
discovery stays cheap.
"""

from __future__ import annotations

import gramx
from gramx_hf.importer import add_import_command, import_space, tower_options
from gramx_hf.lora import add_lora
from gramx_hf.towers import ARCHITECTURES, SUPPORTED, TowerEncoder

__all__ = ["ARCHITECTURES", "SUPPORTED", "TowerEncoder", "import_space", "tower_options", "add_lora",
           "gramx_register_commands", "gramx_add_lora"]

__version__ = "0.1.0"


@gramx.hookimpl
def gramx_register_commands(subparsers):
    add_import_command(subparsers)


@gramx.hookimpl
def gramx_add_lora(modality, encoder, lora):
    return add_lora(modality, encoder, lora)
