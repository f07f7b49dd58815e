"""The fleet benchmark (issue 17): ``sensorcast fleet status`` and one rollout decision over
1,000 simulated devices on one real Mosquitto. ``bench/fleet_bench.py`` is its entry script.

Modules: ``shapes`` (a real agent's retained messages, recorded at run time), ``sim`` (the
load generator and the devices' answers to model/set), ``measure`` (the timed runs), ``report``
(RESULTS-fleet.md), ``cli``.
"""
