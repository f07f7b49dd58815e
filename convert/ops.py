"""What a converted model is made of: its op histogram, how it runs its recurrence, and
whether the agent's runtimes can run it at all (no Flex or TensorList ops).

The flatbuffer is read with TensorFlow's generated schema through its lazy accessors, so
only the operator codes and operators are touched, never the weight buffers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sensorcast.convert import ConvertError

__all__ = ["FUSED_RECURRENCE", "OpsInfo", "check_runnable", "inspect_ops", "op_names"]

#: TFLite builtins that run a whole recurrent layer as one fused kernel.
FUSED_RECURRENCE = frozenset(
    {
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "BIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_RNN",
        "BIDIRECTIONAL_SEQUENCE_RNN",
    }
)
_RUNTIMES = "the agent's runtimes (LiteRT, tflite-runtime)"


@dataclass(frozen=True)
class OpsInfo:
    """The ops of a TFLite model, every subgraph counted."""

    histogram: dict[str, int] = field(default_factory=dict)  #: op name -> count
    recurrence: str = "none"  #: "fused", "loop", "unrolled" or "none" (manifest RECURRENCES)


def op_names(tflite: bytes) -> list[str]:
    """The name of every operator in every subgraph, in order: the builtin's name
    (``FULLY_CONNECTED``), or a custom op's code (``FlexErf``)."""
    return _read_ops(tflite)[0]


def _read_ops(tflite: bytes) -> tuple[list[str], set[str]]:
    """Every operator's name (see :func:`op_names`), and the names that are custom ops."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    try:
        model = schema.Model.GetRootAs(tflite, 0)
        codes, custom_codes = [], set()
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            # Builtins past 127 live in builtin_code; older files only set the deprecated byte.
            number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            if number == schema.BuiltinOperator.CUSTOM and custom is not None:
                codes.append(custom.decode("utf-8", errors="replace"))
                custom_codes.add(codes[-1])
            else:
                codes.append(builtin.get(number, f"BUILTIN_{number}"))
        names = []
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            names += [
                codes[graph.Operators(k).OpcodeIndex()] for k in range(graph.OperatorsLength())
            ]
    except (IndexError, ValueError, TypeError) as exc:  # a damaged flatbuffer, not ours to fix
        raise ConvertError(
            f"the converted model is not a readable TFLite flatbuffer ({exc})"
        ) from exc
    return names, custom_codes


def inspect_ops(tflite: bytes, recurrent: bool = False) -> OpsInfo:
    """Count every op of ``tflite`` and tell how it runs its recurrence.

    ``recurrent`` says the source model has a recurrent layer (the caller knows its layers):
    with no fused op and no WHILE loop, its recurrence was then unrolled step by step.
    """
    histogram = dict(Counter(op_names(tflite)).most_common())
    if FUSED_RECURRENCE & histogram.keys():
        recurrence = "fused"
    elif "WHILE" in histogram:
        recurrence = "loop"
    elif recurrent:
        recurrence = "unrolled"
    else:
        recurrence = "none"
    return OpsInfo(histogram=histogram, recurrence=recurrence)


def check_runnable(tflite: bytes, mode: str) -> None:
    """Raise :class:`ConvertError` naming the op and the fix if the agent's runtimes cannot
    run ``tflite``: a Flex (SELECT_TF_OPS) op, a ``TensorList*`` op or any other custom op.

    ``tensorflow.lite`` with the Flex delegate could run some of them, but the agent runs on
    LiteRT or tflite-runtime, which have neither, so such a bundle would fail on the device.
    """
    ops, custom_codes = _read_ops(tflite)
    names = set(ops)
    tensor_list = sorted(n for n in names if "TensorList" in n)
    if tensor_list:
        window, features = _input_dims(tflite)
        raise ConvertError(
            f"the {mode} model needs op {tensor_list[0]}, which {_RUNTIMES} cannot run: "
            "TensorFlow kept the recurrent loop as TensorList ops, as it does for a free batch "
            "dimension; export the model with a fixed batch of 1 and convert that directory: "
            f"model.export(DIR, input_signature=[tf.TensorSpec((1, {window}, {features}), "
            "tf.float32)])"
        )
    flex = sorted(n for n in names if n.startswith("Flex"))
    if flex:
        raise ConvertError(
            f"the {mode} model needs op {flex[0]}, which {_RUNTIMES} cannot run (a TensorFlow "
            f"op, {flex[0][4:]}, with no TFLite kernel); build the model from layers with "
            "built-in TFLite ops (LSTM, GRU, Conv1D, Dense, ...) instead of the code that "
            f"uses {flex[0][4:]}"
        )
    custom = sorted(custom_codes)
    if custom:
        raise ConvertError(
            f"the {mode} model needs custom op {custom[0]}, which {_RUNTIMES} do not have; "
            "build the model from layers with built-in TFLite ops (LSTM, GRU, Conv1D, Dense, ...)"
        )


def _input_dims(tflite: bytes) -> tuple[Any, Any]:
    """The first input's window and feature count, for a message (``WINDOW``/``FEATURES``
    when the flatbuffer does not say)."""
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        graph = schema.Model.GetRootAs(tflite, 0).Subgraphs(0)
        shape = list(graph.Tensors(graph.Inputs(0)).ShapeAsNumpy())
    except (IndexError, ValueError, TypeError, AttributeError):
        shape = []
    if len(shape) == 3 and shape[1] > 0 and shape[2] > 0:
        return int(shape[1]), int(shape[2])
    return "WINDOW", "FEATURES"
