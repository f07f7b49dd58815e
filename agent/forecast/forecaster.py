"""The Forecaster: one loaded bundle, one interpreter, no allocation per forecast."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.manifest import Bundle
from sensorcast.agent.forecast.runtime import Runtime, load_runtime
from sensorcast.agent.forecast.tflite import min_runtime_version

__all__ = [
    "BATCH_SIGNATURE",
    "Forecaster",
    "Rollout",
    "check_fits",
    "plain_shape",
    "range_bounds",
]

#: Name of the batched signature a bundle converted with ``--batch`` carries.
BATCH_SIGNATURE = "forecast_batch"


def plain_shape(dims: Any) -> tuple[int, ...]:
    """A tensor shape as plain ints, ``(1, 24, 2)``: interpreters give numpy arrays, whose
    items print as ``np.int32(1)`` in messages."""
    return tuple(int(d) for d in dims)


class Forecaster:
    """Normalize a window, invoke the interpreter, de-normalize the forecast.

    Owns its interpreter; use it from one thread only.
    """

    def __init__(
        self, bundle: Bundle, runtime: Optional[Runtime] = None, num_threads: int = 1
    ) -> None:
        self.bundle = bundle
        m = bundle.manifest
        self.runtime = runtime or load_runtime()
        _check_runtime_version(bundle, self.runtime)
        self._interp: Any = self.runtime.interpreter(bundle.model, num_threads)
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        where = f"model {bundle.path}"
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{where}: expected one input and one output tensor")
        inp, out = inputs[0], outputs[0]
        want_in = (1, m.window, len(m.features))
        if plain_shape(inp["shape"]) != want_in:
            raise ModelError(
                f"{where}: input tensor shape {plain_shape(inp['shape'])} does not match the "
                f"manifest's {want_in} (1 x window x features); reconvert the model"
            )
        out_shape = plain_shape(out["shape"])
        if math.prod(out_shape) != m.horizon * len(m.targets) or out_shape[:1] != (1,):
            raise ModelError(
                f"{where}: output tensor shape {out_shape} does not hold the manifest's "
                f"{m.horizon} steps x {len(m.targets)} targets; reconvert the model"
            )
        for side, detail, quant in (("input", inp, m.input), ("output", out, m.output)):
            got = np.dtype(detail["dtype"]).name
            if got != quant.dtype:
                raise ModelError(
                    f"{where}: {side} tensor is {got} but the manifest says {quant.dtype}"
                )
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self.horizon = m.horizon
        self.n_targets = len(m.targets)

        norm = m.normalization
        f_mean = [norm[f].mean if norm else 0.0 for f in m.features]
        f_std = [norm[f].std if norm else 1.0 for f in m.features]
        t_mean = [norm[t].mean if norm else 0.0 for t in m.targets]
        t_std = [norm[t].std if norm else 1.0 for t in m.targets]
        self._f_mean = np.asarray(f_mean, dtype=np.float32)
        self._f_inv_std = (1.0 / np.asarray(f_std, dtype=np.float64)).astype(np.float32)
        self._t_mean = np.asarray(t_mean, dtype=np.float64)
        self._t_std = np.asarray(t_std, dtype=np.float64)

        self._x = np.zeros((1, m.window, len(m.features)), dtype=np.float32)
        self._int8_in = m.input.dtype == "int8"
        self._in_scale = m.input.scale
        self._in_zero = float(m.input.zero_point)
        self._xq = np.zeros(self._x.shape, dtype=np.int8)
        self._int8_out = m.output.dtype == "int8"
        self._out_zero = float(m.output.zero_point)
        # De-quantize and de-normalize in one multiply: (q - zero) * (scale * std) + mean.
        self._out_mul = self._t_std * (m.output.scale if self._int8_out else 1.0)
        self._y = np.zeros((m.horizon, self.n_targets), dtype=np.float64)

        # The verified input range as float32 bounds, one per value of the window (a bound
        # per feature, broadcast over rows, runs the comparison's inner loop two values at a
        # time: twice as slow), and two masks to compare into: four numpy calls on
        # preallocated arrays, no allocation.
        self.checks_range = bool(m.verified_range)  #: False: the bundle records no range.
        shape = (m.window, len(m.features))
        low, high = range_bounds(m.features, m.verified_range)
        self._low = np.ascontiguousarray(np.broadcast_to(low, shape))
        self._high = np.ascontiguousarray(np.broadcast_to(high, shape))
        self._below = np.zeros(shape, dtype=bool)
        self._above = np.zeros(shape, dtype=bool)
        # For out_of_range_moved: the bounds as Python floats (float32 values, exactly), the
        # row number checked through, and the newest row found outside (-1: none).
        self._low_row, self._high_row = low.tolist(), high.tolist()
        self._checked = -1
        self._newest_out = -1

        #: Windows per batched call (1: the bundle has no batch signature).
        self.batch_size = m.batch
        self._num_threads = num_threads
        self._batch_runner: Any = None

    def _setup_batch(self, size: int) -> None:
        """Open the batch signature, in an interpreter of its own.

        A signature runner on the single-window interpreter makes its plain
        invoke() refuse to run, so batching gets its own (made on first use).
        """
        m = self.bundle.manifest
        interp = self.runtime.interpreter(self.bundle.model, self._num_threads)
        try:
            runner = interp.get_signature_runner(BATCH_SIGNATURE)
        except ValueError as exc:
            raise ModelError(
                f"model {self.bundle.path}: manifest says batch {size} but the model has no "
                f"{BATCH_SIGNATURE!r} signature; reconvert it"
            ) from exc
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"model {self.bundle.path}: batch signature needs one input and output"
            )
        self._batch_runner = runner
        self._batch_in_name = next(iter(inputs))
        got = plain_shape(next(iter(inputs.values()))["shape"])
        if got != (size, m.window, len(m.features)):
            raise ModelError(
                f"model {self.bundle.path}: batch signature input shape {got} does not match "
                f"the manifest's batch {size} of {m.window} x {len(m.features)}"
            )
        self._bx = np.zeros((size, m.window, len(m.features)), dtype=np.float32)
        self._bxq = np.zeros(self._bx.shape, dtype=np.int8)
        self._by = np.zeros((size, m.horizon, self.n_targets), dtype=np.float64)

    def predict_batch(self, windows: list[np.ndarray]) -> np.ndarray:
        """Forecast several ``(window, features)`` arrays in batched calls.

        Returns ``(len(windows), horizon, targets)`` in target units (a new array).
        Needs a bundle converted with ``--batch``; see :attr:`batch_size`.
        """
        size = self.batch_size
        if size <= 1:
            return np.stack([self.predict(w).copy() for w in windows])
        if self._batch_runner is None:
            self._setup_batch(size)
        out = np.empty((len(windows), self.horizon, self.n_targets), dtype=np.float64)
        for start in range(0, len(windows), size):
            chunk = windows[start : start + size]
            n = len(chunk)
            for i, window in enumerate(chunk):
                self._bx[i] = window  # the windows are views of separate rings: one copy each
            x = self._bx[:n]
            np.subtract(x, self._f_mean, out=x)  # then normalize the chunk in one go
            np.multiply(x, self._f_inv_std, out=x)
            self._bx[n:] = 0.0  # padding rows: computed and dropped
            feed = self._quantize_in(self._bx, self._bxq) if self._int8_in else self._bx
            result = self._batch_runner(**{self._batch_in_name: feed})
            raw = next(iter(result.values())).reshape(size, self.horizon, self.n_targets)
            y = self._by
            self._denormalize(raw, y)
            out[start : start + n] = y[:n]
        return out

    def _quantize_in(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        np.divide(x, self._in_scale, out=x)
        np.add(x, self._in_zero, out=x)
        np.rint(x, out=x)
        np.clip(x, -128, 127, out=x)
        np.copyto(q, x, casting="unsafe")
        return q

    def _denormalize(self, raw: np.ndarray, y: np.ndarray) -> None:
        """``y = de-normalized, de-quantized raw`` in place: two or three ufuncs, no copy."""
        if self._int8_out:
            np.subtract(raw, self._out_zero, out=y)
            np.multiply(y, self._out_mul, out=y)
        else:
            np.multiply(raw, self._out_mul, out=y)
        np.add(y, self._t_mean, out=y)

    def out_of_range(self, window: np.ndarray) -> bool:
        """True if any value of a ``(window, features)`` array (reading units, as given to
        :meth:`predict`) lies outside the range the bundle was verified on
        (``manifest.verified_range``). Always False for a bundle that records no range.

        About 2.5 us for a 24 x 2 window (x86); it allocates nothing.
        """
        if not self.checks_range:
            return False
        np.less(window, self._low, out=self._below)
        np.greater(window, self._high, out=self._above)
        # count_nonzero: a plain loop over the bytes, a third of ndarray.any()'s reduction.
        return bool(np.count_nonzero(self._below) or np.count_nonzero(self._above))

    def out_of_range_moved(self, window: np.ndarray, appended: int) -> bool:
        """:meth:`out_of_range` of a window's view whose newest row is row number
        ``appended - 1`` (``Window.appended``): only the rows appended since the last call
        are checked, as Python floats (the float32 values, exactly: the same verdict), the
        older rows' is remembered. The forecast's window moves by one row: about a quarter
        of :meth:`out_of_range`'s four numpy calls."""
        if not self.checks_range:
            return False
        n, new = len(window), appended - self._checked
        if new < 0 or new >= n:  # another window, a restored one, or many rows at once
            np.less(window, self._low, out=self._below)
            np.greater(window, self._high, out=self._above)
            np.logical_or(self._below, self._above, out=self._below)
            rows = np.flatnonzero(self._below.any(axis=1))
            self._newest_out = appended - n + int(rows[-1]) if len(rows) else -1
        elif new:
            low, high = self._low_row, self._high_row
            for k, row in enumerate(window[n - new :].tolist(), appended - new):
                for v, lo, hi in zip(row, low, high):
                    if v < lo or v > hi:
                        self._newest_out = k
        self._checked = appended
        return self._newest_out >= appended - n

    def range_report(self, window: np.ndarray) -> str:
        """Which features of ``window`` left the verified range, for a log line:
        ``"temperature 31.2 > 25 (verified 15..25)"``. Not for the hot path."""
        m, parts = self.bundle.manifest, []
        for i, name in enumerate(m.features):
            if name not in m.verified_range:
                continue
            low, high = m.verified_range[name]
            lowest, highest = window[:, i].min(), window[:, i].max()
            if lowest < self._low[0, i]:
                parts.append(f"{name} {lowest:g} < {low:g} (verified {low:g}..{high:g})")
            if highest > self._high[0, i]:
                parts.append(f"{name} {highest:g} > {high:g} (verified {low:g}..{high:g})")
        return ", ".join(parts) or "in range"

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Forecast from a ``(window, features)`` array in reading units.

        Returns a ``(horizon, targets)`` array in target units. The array is
        reused by the next call: copy it to keep it.
        """
        x = self._x[0]
        np.subtract(window, self._f_mean, out=x)
        np.multiply(x, self._f_inv_std, out=x)
        if self._int8_in:
            self._interp.set_tensor(self._in_index, self._quantize_in(self._x, self._xq))
        else:
            self._interp.set_tensor(self._in_index, self._x)
        # A fused LSTM op (int8 bundles) keeps its state in variable tensors that outlive
        # invoke(): without the reset each window would start from the last one's end.
        self._interp.reset_all_variables()
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out_index).reshape(self.horizon, self.n_targets)
        y = self._y
        self._denormalize(raw, y)
        return y


class Rollout:
    """Autoregressive forecasts from a single-step model whose targets are among its inputs.

    Predict one step, append it to a copy of the window (targets replaced by
    the prediction, other features carried forward from the last row), and
    predict again, ``steps`` times, as the TensorFlow time-series tutorial does.

    Whether a forecast is ``out_of_range`` is judged on the window the sensors gave
    (:meth:`Forecaster.out_of_range` of that window), not on the later steps' inputs: a
    prediction beyond the verified range is the model's own output, not an input it was
    never verified on.
    """

    def __init__(self, forecaster: Forecaster, steps: int) -> None:
        m = forecaster.bundle.manifest
        where = f"model {forecaster.bundle.path}"
        if m.horizon != 1:
            raise ModelError(
                f"{where}: rollout_steps needs a single-step model, this one forecasts "
                f"{m.horizon} steps; remove rollout_steps"
            )
        missing = [t for t in m.targets if t not in m.features]
        if missing:
            raise ModelError(
                f"{where}: rollout_steps needs the targets among the inputs; "
                f"{', '.join(missing)} is not an input feature"
            )
        if steps < 1:
            raise ModelError(f"{where}: rollout_steps must be at least 1")
        self.forecaster = forecaster
        self.steps = steps
        self._target_cols = np.array([m.features.index(t) for t in m.targets])
        # window + steps rows, allocated once: step k reads rows k .. k + window.
        self._work = np.zeros((m.window + steps, len(m.features)), dtype=np.float32)
        self._window = m.window
        self._y = np.zeros((steps, len(m.targets)), dtype=np.float64)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """``(steps, targets)`` forecasts in target units; reused by the next call."""
        n, work = self._window, self._work
        work[:n] = window
        for step in range(self.steps):
            y = self.forecaster.predict(work[step : step + n])
            self._y[step] = y[0]
            if step + 1 < self.steps:
                work[step + n] = work[step + n - 1]
                work[step + n, self._target_cols] = y[0]
        return self._y


def range_bounds(
    features: tuple[str, ...], verified: dict[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 arrays, one bound per feature, from a manifest's
    ``verified_range``: a feature it does not list (a computed time feature, or every feature
    of an older bundle) is unbounded (-inf, +inf).

    The window holds float32, so each bound is rounded outward to float32: a reading equal
    to a bound is in range, whichever way float64 -> float32 rounded it.
    """
    low = np.full(len(features), -np.inf, dtype=np.float32)
    high = np.full(len(features), np.inf, dtype=np.float32)
    for i, name in enumerate(features):
        if name in verified:
            lo, hi = verified[name]  # |bound| <= 1e30 (manifest fields): finite in float32
            low[i] = np.float32(lo)
            if low[i] > lo:
                low[i] = np.nextafter(low[i], np.float32(-np.inf))
            high[i] = np.float32(hi)
            if high[i] < hi:
                high[i] = np.nextafter(high[i], np.float32(np.inf))
    return low, high


def _check_runtime_version(bundle: Bundle, runtime: Runtime) -> None:
    """Refuse a bundle whose ops are newer than a TensorFlow-versioned runtime.

    (tflite-runtime 2.14, its last release, cannot run e.g. the FULLY_CONNECTED
    op version that TensorFlow 2.21's dynamic-range quantization emits.)
    LiteRT has its own version numbers and is newer than any converter here.
    """
    if runtime.name == "litert":
        return
    need = min_runtime_version(bundle.model)
    try:
        have = tuple(int(p) for p in runtime.version.split(".")[:3])
    except ValueError:
        return
    if need is not None and have < need:
        wanted = ".".join(map(str, need))
        raise ModelError(
            f"model {bundle.path} needs a TFLite runtime >= {wanted} but {runtime.name} is "
            f"{runtime.version}; install ai-edge-litert, or convert with --quantize float32"
        )


def check_fits(bundle: Bundle, features: Optional[tuple[str, ...]], stream: str) -> None:
    """Raise :class:`ModelError` if the bundle's features are not what the stream gives."""
    if features is not None and tuple(features) != bundle.manifest.features:
        raise ModelError(
            f"stream {stream}: model {bundle.path} wants features "
            f"{', '.join(bundle.manifest.features)} but the stream has {', '.join(features)}"
        )
