"""sensorcast's benchmarks: a small harness and one module per question.

``bench.harness`` runs child processes, times calls, reads RSS and CPU time, starts Mosquitto,
describes the machine and renders markdown. ``bench.agent`` (``bench/run``) measures what the
agent costs beyond the model; ``bench.convert`` (``bench/convert_bench.py``) what each way of
converting an LSTM costs; ``bench.soak`` and ``bench.flood`` stress a running agent. See
``bench/README.md``.
"""
