"""The trainer: a run file in, a model directory out (data, objective, loop, checkpoints, logs)."""

from gramx.train.config import RunConfig, build_model, load_config, parse_config
from gramx.train.loop import train

__all__ = ["RunConfig", "build_model", "load_config", "parse_config", "train"]
