"""One context-manager shape for the test rigs that start processes (brokers, bridged pairs,
fleets of agents): ``with`` starts it with :meth:`Managed.begin`, closing whatever it had
started if that fails, and closes it after."""

from __future__ import annotations

from types import TracebackType
from typing import Optional, TypeVar

__all__ = ["Managed"]

_M = TypeVar("_M", bound="Managed")


class Managed:
    """Subclasses define :meth:`begin` (start everything) and :meth:`close` (stop it; safe
    to call on a half-started rig)."""

    def begin(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _M) -> _M:
        try:
            self.begin()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        _type: Optional[type[BaseException]],
        _value: Optional[BaseException],
        _tb: Optional[TracebackType],
    ) -> None:
        self.close()
