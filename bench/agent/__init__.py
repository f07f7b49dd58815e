"""The agent benchmark (``bench/run``): what the agent costs beyond the model, and the rest.

One module per question, each with its in-process children (``child_<kind>``), its
``measure(run)`` in the parent, its ``render(results)`` section of ``bench/RESULTS.md`` and
its ``targets(results)`` rows, in the order of ``report.QUESTIONS``: ``path`` (the compute
path; ``instructions`` counts it with callgrind), ``outside`` (the whole path from outside),
``many``, ``idle``, ``memory``, ``modes``, ``ingest``, ``batching``, ``startup``, ``flame``,
``alternatives``, ``qemu``.
Around them: ``cli`` (options, the run), ``context`` (what a run shares), ``trees`` (the
before and after agent trees), ``drive`` with ``seams`` (this tree's public seams) and
``legacy`` (a baseline from before them), ``models`` (training and conversions),
``common``, ``targets`` and ``report``.
"""
