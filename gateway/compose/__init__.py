"""Compose: a rule's post, text from its template fitted to each publisher.

- :mod:`.composer`: :class:`~.composer.Composer` renders the sandboxed Jinja2
  templates and gathers the media;
- :mod:`.checking`: the checks of a rule's templates (names, filters, tests, sensor
  attributes) that ``check-config`` reports;
- :mod:`.filters`: the template filters (``time``, ``number``, ``arrow``...);
- :mod:`.textfit`: each service's way of counting length; shortening and threads.
"""

from gateway._moved import forward_names

__getattr__ = forward_names(__name__)
