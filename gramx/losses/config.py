"""The ``loss`` section of a run file: which objective, its anchor, temperature and extra terms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gramx.files.validation import MAX_WIDTH, Section

__all__ = ["LossConfig"]


class LossConfig(Section):
    """The training objective."""

    type: str = Field(
        "gram", description="gram: GRAM volume loss; triangle: TRIANGLE area loss (three modalities); symile: "
        "Symile multilinear inner product; pairwise: InfoNCE to the anchor; pairwise_all: all pairs; pmrl: PMRL's "
        "leading singular value; confu: ConFu, pairs and fused pairs (three or more modalities); gated_symile: "
        "Symile with per-candidate gates; or a type a plugin registers"
    )
    anchor: str = Field("text", description="anchor modality (gram and triangle also accept 'all'; symile "
                        "anchors every modality in turn; pmrl, confu and gated_symile have no anchor)")
    temperature: float = Field(0.07, gt=0, description="initial temperature (trained)")
    learn_temperature: bool = True
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="None: the loss's default")
    pairwise_weight: float | None = Field(
        None, ge=0, description="weight of a pairwise InfoNCE term added to the GRAM loss (to the anchor; all "
        "pairs for anchor 'all'). The volume cannot tell a vector from its negative, so GRAM alone may align "
        "a modality pointing away from the others; this term fixes the sign that cosine retrieval and "
        "zero-shot rely on. None = off"
    )
    pairwise_warmup: int | None = Field(
        None, ge=1, description="steps over which the pairwise term's weight falls linearly from pairwise_weight "
        "(default 1) to zero: GRAM trains from scratch without a permanent pairwise term. None = off"
    )
    cosine_weight: float | None = Field(
        None, ge=0, description="gram: cosine-regularised volume logits, -(volume - w x sum of the anchor's cosine "
        "similarities with the others) / t. None = off"
    )
    negatives: Literal["n", "n_squared"] = Field(
        "n", description="symile: negatives per row from one shuffle of each modality (n) or from every "
        "combination of rows (n_squared: B^m logits per row, small batches only)"
    )
    singular_temperature: float = Field(
        0.05, gt=0, description="pmrl: the fixed temperature of the softmax over each tuple's singular values (the "
        "run's temperature is its contrastive regulariser's)"
    )
    fused_weight: float = Field(
        0.5, ge=0, le=1, description="confu: weight of the fused terms (a fused pair against the remaining "
        "modality); the pairwise terms weigh 1 - fused_weight"
    )
    fusion_hidden: int = Field(512, ge=1, le=MAX_WIDTH, description="confu: hidden width of each pair's fusion network")
    gate_dim: int = Field(256, ge=1, le=MAX_WIDTH,
                          description="gated_symile: width of the gate's query and key projections")
    gate_null: bool = Field(True, description="gated_symile: the gate's NULL option (trust none of the query's "
                            "vectors for a candidate)")
    local: bool = Field(
        False, description="under torchrun: each process computes its own rows' terms against the global batch "
        "(open_clip's local loss); same gradients, logits per process linear (not quadratic) in the processes"
    )
    dam_weight: float | None = Field(None, ge=0, description="weight of data-anchor matching; None = off")
    dam_hidden: int = Field(256, ge=1, description="hidden width of the DAM head")
