"""What a converted model is made of: its op histogram, how it runs its recurrence, and
whether the agent's runtimes can run it at all (no Flex or TensorList ops).

STUB (helper H4 implements it): the signatures are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OpsInfo", "check_runnable", "inspect_ops"]


@dataclass(frozen=True)
class OpsInfo:
    """The ops of a TFLite model, every subgraph counted."""

    histogram: dict[str, int] = field(default_factory=dict)  #: op name -> count
    recurrence: str = "none"  #: "fused", "loop", "unrolled" or "none" (manifest RECURRENCES)


def inspect_ops(tflite: bytes) -> OpsInfo:
    """Count every op of ``tflite`` and tell how it runs its recurrence."""
    return OpsInfo()


def check_runnable(tflite: bytes, mode: str) -> None:
    """Raise ConvertError naming the op and the fix if the agent's runtimes cannot run it."""
