"""Contrastive objectives over n-modality tuples, and the table that names them for run files."""

from gramx.losses.confu import ConFuLoss
from gramx.losses.contrastive import (
    DataAnchorMatching,
    GramLoss,
    NothingToContrast,
    PairwiseInfoNCE,
    SymileLoss,
    Temperature,
    TriangleLoss,
)
from gramx.losses.gated_symile import GatedSymileLoss
from gramx.losses.pmrl import PMRLLoss
from gramx.losses.table import LOSS_TYPES, LossType

__all__ = ["ConFuLoss", "DataAnchorMatching", "GatedSymileLoss", "GramLoss", "LOSS_TYPES", "LossType",
           "NothingToContrast", "PMRLLoss", "PairwiseInfoNCE", "SymileLoss", "Temperature", "TriangleLoss"]
