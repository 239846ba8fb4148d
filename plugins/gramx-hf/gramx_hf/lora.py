"""LoRA adapters on an encoder's pretrained weights, through peft (implements the ``gramx_add_lora`` hook).

The encoder names its pretrained weights with ``pretrained_weights`` (``{state-dict prefix:
folder}``); every module under those prefixes whose name ends with one of
``lora.target_modules`` gets a low-rank adapter (``peft.inject_adapter_in_model``), the
pretrained weights stop requiring gradients and only the adapters train. Works for any
``nn.Linear`` (and the other layers peft supports), so for every transformers tower: text,
image, audio, video, an imported CLIP, SigLIP or CLAP.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gramx.errors import ConfigError

__all__ = ["add_lora"]


def _layer_names(module: nn.Module, shown: int = 8) -> str:
    names = sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)})
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "") or "none"


def add_lora(modality: str, encoder: nn.Module, lora: Any) -> nn.Module:
    """Add LoRA adapters (``lora``: a :class:`gramx.train.config.LoraConfig`) to ``encoder``'s pretrained weights, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    declared = getattr(encoder, "pretrained_weights", None) or {}
    if not declared:
        raise ConfigError(f"modality {modality!r}: LoRA adapts pretrained weights, and its encoder has none",
                          hint="use a pretrained encoder (e.g. encoder: hf with model_path), or remove lora")
    for prefix in declared:
        module = encoder.get_submodule(prefix.rstrip(".")) if prefix else encoder
        module.requires_grad_(False)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules))
        try:
            inject_adapter_in_model(config, module)
        except ValueError as exc:
            raise ConfigError(
                f"modality {modality!r}: no layer of its pretrained weights matches lora.target_modules "
                f"{list(lora.target_modules)} ({exc})",
                hint=f"its linear layers are named: {_layer_names(module)}") from None
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    return encoder
