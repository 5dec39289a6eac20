"""The runtime: the daemon around the engine, and what the CLI asks of it.

- :mod:`.app`: :class:`~.app.Gateway` wires config → ingest → state → rules →
  compose → outbox → delivery workers, and starts and stops them in order;
- :mod:`.daemon`: signals, reload, systemd notify and watchdog;
- :mod:`.loading`: loading a config with the engine's checks;
- :mod:`.health`, :mod:`.status`, :mod:`.hass`, :mod:`.sdnotify`: health row,
  ``status``, Home Assistant discovery, the systemd notify socket;
- :mod:`.preview`: ``things-gateway preview``; :mod:`.logs`: log format and setup.
"""
