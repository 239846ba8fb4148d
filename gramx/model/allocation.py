"""A bound on what building a model allocates, whatever sizes its configuration asks for.

A model is built from sizes read from files: the space's ``dim`` and head widths (bounded
by the schema, :data:`gramx.train.config.MAX_WIDTH`) and each plugin's own options (channels,
hidden widths, layers), which the core cannot know. So building runs under an
:class:`AllocationBudget`: every tensor a factory function creates (``torch.empty``,
``zeros``, ``eye``..., which is how ``nn.Linear``, ``nn.Conv2d`` and the rest make their
weights) is counted *before* it is allocated, and a build that would exceed
:data:`MAX_MODEL_VALUES` stops with an error instead of asking for terabytes. Tensors on the
``meta`` device cost nothing and are not counted; weights read from files are not either
(their size is that of the file).
"""

from __future__ import annotations

import math
import operator

import torch
from torch.overrides import TorchFunctionMode

from gramx.errors import ConfigError

__all__ = ["MAX_MODEL_VALUES", "AllocationBudget"]

#: The most values (parameters and buffers) building one model may create: 2**32, about
#: 4.3 billion (16 GiB in float32), more than any encoder gramx trains or imports.
MAX_MODEL_VALUES = 1 << 32

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.eye,
              torch.empty_strided, torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
              torch.Tensor.new_full}


def _int(value) -> int | None:
    try:
        return operator.index(value)
    except TypeError:
        return None


def _values(func, args: tuple, kwargs: dict) -> int:
    """How many values the factory call ``func(*args, **kwargs)`` creates."""
    if func is torch.eye:
        n = _int(args[0] if args else kwargs.get("n")) or 0
        m = _int(args[1]) if len(args) > 1 else _int(kwargs.get("m"))
        return n * (n if m is None else m)
    size = next((a for a in args if isinstance(a, tuple | list)), kwargs.get("size"))
    dims = [_int(d) for d in (size if size is not None else args)]
    return math.prod(d for d in dims if d is not None)


class AllocationBudget(TorchFunctionMode):
    """Context manager: count the values tensor factories create, and refuse to pass ``limit``.

    ``what`` names what is being built, for the error (change it as building goes on).
    """

    def __init__(self, what: str, limit: int = MAX_MODEL_VALUES):
        super().__init__()
        self.what, self.limit, self.used = what, limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            device = kwargs.get("device") or torch.get_default_device()
            if torch.device(device).type != "meta":
                used = self.used + _values(func, args, kwargs)
                if used > self.limit:
                    raise ConfigError(
                        f"{self.what}: building it would allocate more than {self.limit:,} values (the bound "
                        "gramx.model.allocation.MAX_MODEL_VALUES), so some size in its configuration is far too large",
                        hint="check the sizes in its options (widths, channels, layers) and the space's dim")
                self.used = used
        return func(*args, **kwargs)
