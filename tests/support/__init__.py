"""What the tests share: brokers, agents, configs, MQTT clients, data. Fixtures built on these
live in tests/conftest.py; benches may import these modules too (none needs pytest to import).

- :mod:`tests.support.paths`: ``REPO``, ``DEMO_DIR`` (examples/demo: the Keras model, its
  bundle, norm and data), ``DATA_DIR`` (tests/data).
- :mod:`tests.support.host`: ``IN_CI``, ``missing_tool`` (fail in CI, skip elsewhere),
  ``run_deploy``, ``fill_disk``.
- :mod:`tests.support.brokers`: ``free_port``, ``wait_port``, ``find_mosquitto``,
  ``MosquittoBroker`` (the system's Mosquitto with any conf), ``AmqttBroker`` (amqtt, MQTT
  3.1.1 only), each in a process of its own; ``run_mosquitto``/``run_amqtt`` for fixtures.
- :mod:`tests.support.configs`: ``agent_config`` (an agent's TOML file from Python values),
  ``stdin_stream``, ``topic_stream``, ``to_toml``.
- :mod:`tests.support.agents`: ``start_agent(config, **popen_kwargs)`` (``sensorcast run``
  in a child process), ``run_cli``.
- :mod:`tests.support.mqtt`: ``Subscriber`` (a real client collecting messages).
- :mod:`tests.support.bundles`: ``convert_demo`` (the converter on the demo model),
  ``json_lines`` (readings as JSON lines).
- :mod:`tests.support.manifests`: real bundles with any manifest (``bundle_bytes``).
- :mod:`tests.support.updates`: HTTP servers, keys and bundle variants for model updates.
"""
