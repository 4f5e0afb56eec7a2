"""The tensors of an exported graph, as a plugin declares them and the Open Inference Protocol shows them."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("TensorSpec",)


class TensorSpec(msgspec.Struct, frozen=True, rename="camel"):
    """One input or output tensor of the exported ONNX graph."""

    name: str
    """The tensor's name in the graph, and the key in ``to_arrays`` / ``from_outputs`` dictionaries."""
    datatype: Literal["FP32", "FP64", "INT32", "INT64", "BOOL"]
    """Element type, in the Open Inference Protocol's names."""
    shape: tuple[int, ...]
    """Dimensions; -1 marks a dynamic axis. Axis 0 is always the batch axis."""
    dynamic_axes: tuple[str, ...] = ()
    """Names of the dynamic axes, in order (``("batch",)``, ``("batch", "sequence")``); used for export."""
