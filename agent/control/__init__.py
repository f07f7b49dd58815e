"""Control: Home Assistant discovery and model updates over MQTT."""
