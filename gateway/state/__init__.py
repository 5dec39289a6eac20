"""State: the latest value of every sensor, rolling windows, history, snapshots.

- :mod:`.store`: :class:`~.store.StateStore`, fed by ingest, read by rules and compose;
- :mod:`.windows`: fixed-memory rolling statistics per sensor (min, max, mean...);
- :mod:`.history`: the per-minute readings history in SQLite, written in batches;
- :mod:`.snapshot`: ``state.json``, the latest values saved for restarts and ``preview``.
"""

from gateway._moved import forward_names

__getattr__ = forward_names(__name__)
