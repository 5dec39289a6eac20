"""Rules: when a post is made.

- :mod:`.scheduler`: ``every``/``cron`` rules on APScheduler 3.x;
- :mod:`.expr`: the ``when`` condition language (parsed, never ``eval``'d);
- :mod:`.triggers`: ``when`` and ``on_message`` rules checked as readings arrive;
- :mod:`.guards`: cooldown, daily limits, quiet hours, freshness, dedupe;
- :mod:`.runner`: a firing → guards → compose → the outbox;
- :mod:`.checks`: the engine's checks of a config (conditions, cron, templates).
"""

from gateway._moved import forward_names

__getattr__ = forward_names(__name__)
