"""The model: plugin encoders and projection heads into one space, and its directory format."""

from gramx.model.model import GramxModel, load_model
from gramx.model.schema import ModelConfig

__all__ = ["GramxModel", "ModelConfig", "load_model"]
