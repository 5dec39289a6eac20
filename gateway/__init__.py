"""things-gateway: make things post.

The packages follow the data flow (ARCHITECTURE.md): ``config`` → ``ingest`` →
``state`` → ``rules`` → ``compose`` + ``media`` → ``outbox`` → ``publishers``, with
``runtime`` (the daemon) and ``cli`` on top.
"""

from gateway import _moved

__version__ = "0.1.0"

_moved.install()
