"""What the in-process benchmarks do with an agent tree, whichever tree it is.

A child imports one tree (:func:`bench.agent.trees.use_tree`) and drives it through a
:class:`Driver`: :mod:`bench.agent.seams` for trees with the agent's public seams
(``Service.pipeline``, ``Service.turn``, ``ForecastPublisher.outbox``), and
:mod:`bench.agent.legacy` for a ``--baseline`` from before them (it alone touches the old
private methods). The objects are the tree's own, so they are typed ``Any`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from bench.agent.trees import LEGACY, use_tree

__all__ = ["Driver", "NullBox", "driver"]


class NullBox:
    """An outbox that keeps nothing: the path without durability or MQTT."""

    def put(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Take a message and drop it; a message id."""
        return 1


class Driver(Protocol):
    """One agent tree's classes and the handful of operations the benchmarks need."""

    package: str

    def load_runtime(self, name: Optional[str]) -> Any:
        """The runtime ``name`` (``litert``, ``tflite-runtime``; None: the default)."""

    def read_bundle(self, path: Path) -> Any:
        """A bundle (model and manifest)."""

    def forecaster(self, bundle: Any, runtime: Any = None) -> Any:
        """A ``Forecaster`` for ``bundle``."""

    def window(self, features: int, size: int, period_s: float) -> Any:
        """A ``Window`` that accepts any timestamp (replayed history)."""

    def outbox(self, path: Optional[Path]) -> Any:
        """An ``Outbox`` in SQLite at ``path``, or in memory for None."""

    def publisher(self, box: Any, targets: tuple[str, ...], period_s: float) -> Any:
        """A ``ForecastPublisher`` into ``box`` (device ``pi-1``, stream ``room``, QoS 1)."""

    def parser(self, features: tuple[str, ...], sink: Callable[[Any], None]) -> Any:
        """An MQTT JSON source of ``features`` handing its readings to ``sink``."""

    def reading(self, feature: int, ts: float, value: float) -> Any:
        """A ``Reading`` of stream 0."""

    def service(self, cfg: Path, runtime: Any) -> Any:
        """A ready ``Service`` on the config file ``cfg``, connected to its broker."""

    def stream_input(self, service: Any, index: int) -> Callable[[bytes, float], None]:
        """What the broker's messages for stream ``index`` are handed to: (payload, arrival)."""

    def use_outbox(self, service: Any, box: Any, publishers_only: bool) -> None:
        """Replace the service's outbox by ``box`` (for the publishers only, if asked)."""

    def turn(self, service: Any) -> None:
        """One turn of the service's loop, without waiting."""

    def ingest(self, service: Any, batch: list[Any], now: float) -> None:
        """Hand a batch of readings to the service's hot path, as the loop does."""

    def forecasts(self, service: Any, stream: str) -> int:
        """Forecasts ``stream`` made so far."""

    def close(self, service: Any, flush_s: Optional[float]) -> int:
        """Flush for up to ``flush_s`` s (None: do not), close; messages left in the outbox."""


def driver(spec: dict[str, Any]) -> Driver:
    """Import the tree the spec names (``tree``, ``package``) and its driver."""
    package = use_tree(spec)
    if package == LEGACY:
        from bench.agent.legacy import LegacyDriver

        return LegacyDriver()
    from bench.agent.seams import SeamsDriver

    return SeamsDriver()
