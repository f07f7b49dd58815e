"""Manifests with every field issue 15 added, for tests of how the agent shows them.

The demo bundle's manifest with its ``humidity`` input turned into a computed ``Day sin``
(the model still takes two inputs), a verified range, per-target errors, naive baselines and
skill, an op histogram and a recurrence, and ``forced``. Write it with
:func:`tests.support.manifests.bundle_bytes`.
"""

from __future__ import annotations

from typing import Any

from tests.support.manifests import demo_manifest

__all__ = ["TRUST_OPS", "trust_manifest"]

#: The op histogram :func:`trust_manifest` records (a WHILE-loop LSTM's ops).
TRUST_OPS = {
    "FULLY_CONNECTED": 12,
    "ADD": 14,
    "LOGISTIC": 12,
    "MUL": 12,
    "TANH": 8,
    "RESHAPE": 7,
    "SPLIT": 4,
    "WHILE": 1,
}


def trust_manifest(skill: float = 0.234, forced: bool = True) -> dict[str, Any]:
    """The demo manifest with every new field set (``skill`` below 0: the bundle loses)."""
    data = demo_manifest()
    data["features"] = ["temperature", "Day sin"]
    norm = data["normalization"]
    norm["Day sin"] = {"mean": 0.0, "std": 0.7071}
    del norm["humidity"]
    data["computed"] = {"Day sin": "day_sin"}
    data["verified_range"] = {"temperature": [14.25, 27.5]}
    data["ops"] = dict(TRUST_OPS)
    data["recurrence"] = "loop"
    data["forced"] = forced
    horizon = data["horizon"]
    acc = data["accuracy"]
    acc["max_abs_all"] = 0.0171
    acc["out_of_range_mae"] = 0.0312
    acc["out_of_range_max_abs"] = 0.0943
    acc["per_target"] = {
        "temperature": {
            "std": 1.39,
            "mae": 0.00204,
            "max_abs": 0.0118,
            "max_abs_all": 0.0171,
            "out_of_range_mae": 0.0312,
            "out_of_range_max_abs": 0.0943,
        }
    }
    acc["keras_forecast_mae"] = [[0.1]] * horizon
    acc["baselines"] = {"last_value": [[0.2]] * horizon, "seasonal": [[0.3]] * horizon}
    acc["season"] = 288
    acc["skill"] = skill
    acc["residual_quantiles"] = {"0.1": [[-0.12]] * horizon, "0.9": [[0.15]] * horizon}
    return data
