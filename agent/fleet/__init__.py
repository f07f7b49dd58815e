"""``sensorcast fleet``: the fleet controller. It needs no TensorFlow and no model runtime:
it reads the state the agents already publish, retained, on the broker (status, metrics,
quality, model state, the sites' bridge states), shows it (``fleet status``), and rolls a
signed bundle out in waves gated on each device's own forecast quality (``fleet rollout``).
"""
