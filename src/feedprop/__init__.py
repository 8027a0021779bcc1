"""feedprop: train AI workflows end to end, the way PyTorch trains neural networks."""

from feedprop.errors import ExecutionError

__all__ = ["ExecutionError"]
