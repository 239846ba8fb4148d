"""The model directory format: ``config.json``, safetensors weights and a model card.

::

    model/
      config.json        dim, and per modality: the plugin that provided it (distribution +
                         version), its config, the head and LoRA options, the encoder's
                         feature size and the pretrained folders its frozen weights come from
      model.safetensors  every weight not stored by reference (gramx.model.pretrained)
      README.md          a model card
      pretrained/        copies of those folders, in a self-contained directory only

:func:`write_model_files` writes the three files into a folder (a checkpoint adds its own
files beside them); :func:`save_model_dir` writes a whole directory atomically.
:func:`read_model_config` and :func:`read_weights` read them back, with errors that name
the file. Nothing is pickled. Weights holding NaN or infinite values (a diverged run) are
never written, and refused when read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from gramx.errors import GramxError
from gramx.files.atomic import Artefact, atomic_directory
from gramx.files.config_files import read_json
from gramx.files.validation import validate
from gramx.model.schema import FORMAT, ModelConfig

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "MODEL_DIR",
    "state_for_saving",
    "write_model_files",
    "save_model_dir",
    "read_model_config",
    "read_weights",
    "non_finite",
    "fingerprint",
    "model_card",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: A model directory, recognised by its config.json.
MODEL_DIR = Artefact("gramx model directory", CONFIG_NAME, FORMAT, (WEIGHTS_NAME, CARD_NAME, "pretrained/"))
#: What to do about a model file gramx cannot use.
REMAKE_HINT = "export the model again from its original (gramx export MODEL -o COPY), or train it again"


def state_for_saving(module: nn.Module, skip: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts (contiguous CPU tensors, shared storage copied), ``skip`` keys left out."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items() if k not in skip}


def non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The first key of ``state`` whose tensor holds a NaN or infinite value, or None."""
    return next((key for key, value in state.items()
                 if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)


def write_model_files(folder: Path, config: ModelConfig, state: Mapping[str, torch.Tensor],
                      copies: Mapping[str, Path] | None = None) -> None:
    """Write ``config.json``, ``model.safetensors`` (``state``) and ``README.md`` into ``folder``.

    ``copies`` maps paths inside ``folder`` to pretrained folders copied there (a
    self-contained directory). Weights holding NaN or infinite values are refused.
    """
    bad = non_finite(state)
    if bad is not None:
        raise GramxError(f"the model's weight {bad!r} holds NaN or infinite values (training diverged); gramx does "
                         "not write a model that cannot embed", hint="train again with a lower optim.lr, or resume "
                         "from a checkpoint written before the divergence")
    (folder / CONFIG_NAME).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    save_file(dict(state), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CARD_NAME).write_text(model_card(config), encoding="utf-8")
    for relative, source in (copies or {}).items():
        shutil.copytree(source, folder / relative, ignore=shutil.ignore_patterns(".*"))


def save_model_dir(path: str | Path, config: ModelConfig, state: Mapping[str, torch.Tensor],
                   copies: Mapping[str, Path] | None = None, overwrite: bool = False) -> Path:
    """Write a complete model directory at ``path`` atomically (see :func:`write_model_files`); returns ``path``.

    An existing model directory there is replaced; anything else only with ``overwrite``
    (see :mod:`gramx.files.atomic`).
    """
    path = Path(path)
    with atomic_directory(path, MODEL_DIR, overwrite) as tmp:
        write_model_files(tmp, config, state, copies)
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    """The validated ``config.json`` of the model directory ``path``."""
    config_file = Path(path) / CONFIG_NAME
    if not config_file.is_file():
        raise GramxError(f"{path} is not a gramx model directory (no {CONFIG_NAME})",
                         hint="pass the folder written by `gramx train` (e.g. runs/NAME/model)")
    raw = read_json(config_file, hint=f"the file is damaged: {REMAKE_HINT}")
    return validate(ModelConfig, raw, str(config_file),
                    hint=f"was the file edited, or written by another version of gramx? {REMAKE_HINT}")


def read_weights(path: str | Path, expected: Mapping[str, torch.Size], device: str = "cpu",
                 referenced: set[str] = frozenset(), left_out: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The weights of the model directory ``path``: the ``expected`` keys, except ``referenced`` ones it may leave out.

    ``expected`` maps each key to its shape. Keys starting with a prefix in ``left_out``
    (modalities not loaded) are not read. A damaged file, a weight of another shape and
    NaN or infinite values are errors that name the file (and the weight).
    """
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise GramxError(f"{path}: missing {WEIGHTS_NAME}", hint=REMAKE_HINT)
    try:
        with safe_open(str(weights), framework="pt", device=device) as f:
            state = {key: f.get_tensor(key) for key in f.keys() if not key.startswith(left_out)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GramxError(f"{weights}: damaged or not a safetensors file ({exc})", hint=REMAKE_HINT) from None
    missing, unexpected = expected.keys() - set(state) - referenced, set(state) - expected.keys()
    if missing or unexpected:
        raise GramxError(
            f"{weights}: weights do not match the model (missing: {sorted(missing)[:5]}, "
            f"unexpected: {sorted(unexpected)[:5]})",
            hint="was the model saved with another version of a plugin?",
        )
    reshaped = next((key for key, value in state.items() if value.shape != expected[key]), None)
    if reshaped is not None:
        raise GramxError(f"{weights}: weight {reshaped!r} has shape {list(state[reshaped].shape)}, the model's has "
                         f"{list(expected[reshaped])}", hint="was the model saved with another version of a plugin? "
                         "Otherwise the file is damaged: " + REMAKE_HINT)
    bad = non_finite(state)
    if bad is not None:
        raise GramxError(f"{weights}: weight {bad!r} holds NaN or infinite values (the training that wrote it "
                         "diverged), so every embedding would be NaN", hint="train again with a lower optim.lr, "
                         "or use a checkpoint written before the divergence")
    return state


def fingerprint(path: str | Path) -> str:
    """The identity of a saved model: a SHA-256 over what determines its embeddings.

    That is the space (``dim``, ``score``), each modality's plugin, config, head and bridge,
    and the weights file; training records and metrics do not count.
    """
    config = read_model_config(path)
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json", include={"dim", "score", "modalities"}),
                                       sort_keys=True).encode())
    with (Path(path) / WEIGHTS_NAME).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _metrics_lines(metrics: Mapping[str, Any]) -> list[str]:
    table = [(f"{kind}: {key}", m) for kind in ("retrieval", "nway") for key, m in (metrics.get(kind) or {}).items()]
    lines = []
    if table:
        lines += ["| task | R@1 | R@5 | R@10 | MedR | mAP |", "|---|---|---|---|---|---|"]
        for task, m in table:
            lines.append(f"| {task} | " + " | ".join(_fmt(m.get(k)) for k in ("R@1", "R@5", "R@10", "MedR", "mAP")) + " |")
        if metrics.get("tuples"):
            lines.append(f"\nOn {metrics['tuples']} tuples of the validation manifest.")
    for name, acc in (metrics.get("zeroshot") or {}).items():
        lines.append(f"- zero-shot accuracy, {name}: {acc:.2f}%")
    return lines or ["- not evaluated"]


def model_card(config: ModelConfig) -> str:
    """A short Markdown model card: modalities, dims, training data and metrics."""
    lines = [
        "---",
        "library_name: gramx",
        "tags: [gramx, multimodal, gram-volume]",
        "---",
        "",
        "# gramx model",
        "",
        f"Aligns {len(config.modalities)} modalities ({', '.join(config.modalities)}) in one "
        f"{config.dim}-dimensional, L2-normalised space trained with "
        f"{config.training.get('loss', 'a contrastive loss')}. Load it with:",
        "",
        "```python",
        "import gramx",
        'model = gramx.load_model("path/to/this/folder")',
        "```",
        "",
        "## Modalities",
        "",
        "| modality | plugin | version | encoder features | head |",
        "|---|---|---|---|---|",
    ]
    for name, spec in config.modalities.items():
        head = "identity" if spec.head.identity else f"MLP {spec.head.hidden}" if spec.head.hidden else "linear"
        head += ", batch norm" if spec.head.batch_norm else ""
        lora = f" (LoRA r={spec.lora.r} on the encoder)" if spec.lora else ""
        lines.append(
            f"| {name} | {spec.plugin.distribution or spec.plugin.name or '-'} | {spec.plugin.version or '-'} "
            f"| {spec.feature_dim} | {head} -> {config.dim}{lora} |"
        )
    refs = [(name, ref) for name, spec in config.modalities.items() for ref in spec.pretrained]
    if refs:
        lines += ["", "## Pretrained weights", "", "Frozen encoder weights are not stored here but read from "
                  "these folders, whose contents are checked on loading:", ""]
        lines += [f"- {name}: `{ref.path}` (SHA-256 {ref.sha256[:12]}...)" for name, ref in refs]
    lines += ["", "## Training data", ""]
    lines += [f"- {key}: {value}" for key, value in config.training.items()] or ["- not recorded"]
    lines += ["", "## Metrics", "", *_metrics_lines(config.metrics or {})]
    return "\n".join(lines) + "\n"
