"""Shadow models: a second bundle run on a stream's windows, tracked, never published
as the stream's forecast (stub: issue 16)."""

from __future__ import annotations

__all__ = ["Shadow"]


class Shadow:
    """A stream's shadow bundle (see the issue-16 contract); main loop only."""
