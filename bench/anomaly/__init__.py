"""Anomaly detection on real data: false alarms on clean days, delays for injected faults
(``python -m bench.anomaly``; the pieces in :mod:`bench.anomaly.replay`)."""
