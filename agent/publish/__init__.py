"""Publish: topics, the forecast payload, the durable outbox, the sender that drains it, and
the MQTT link."""
