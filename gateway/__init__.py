"""things-gateway: make things post."""

__version__ = "0.1.0"
