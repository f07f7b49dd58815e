"""Telemetry: metrics, forecast quality, the health file and systemd notifications."""
