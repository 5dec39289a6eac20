"""``things-gateway demo``: a private broker, simulated devices and a gateway.

- :mod:`.run`: :func:`~.run.run_demo` and its config (``demo.toml``);
- :mod:`.broker`: starts mosquitto, or the embedded amqtt, on a free loopback port.
"""

from gateway._moved import forward_names

__getattr__ = forward_names(__name__)
