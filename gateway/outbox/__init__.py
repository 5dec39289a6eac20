"""The outbox: the durable local log of every post, and its delivery.

- :mod:`.store`: :class:`~.store.Outbox`, posts and one delivery row per publisher,
  committed before anything is sent;
- :mod:`.delivery`: one :class:`~.delivery.DeliveryWorker` per publisher: retries,
  backoff, ``Retry-After``, daily budgets.
"""

from gateway._moved import forward_names

__getattr__ = forward_names(__name__)
