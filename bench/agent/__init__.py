"""The agent benchmark (``bench/run``): what the agent costs beyond the model, and the rest.

One module per question, each with its in-process child (if any), its ``measure(run)`` in
the parent and its ``render(results)`` section of ``bench/RESULTS.md``: ``path`` (per
forecast; ``instructions`` counts it with callgrind), ``ingest``, ``batching``, ``memory``,
``startup``, ``alternatives``, ``qemu``.
Around them: ``cli`` (options, the run), ``context`` (what a run shares), ``trees`` (the
before and after agent trees), ``drive`` with ``seams`` (this tree's public seams) and
``legacy`` (a baseline from before them), ``models`` (training and conversions),
``common``, ``targets`` and ``report``.
"""
