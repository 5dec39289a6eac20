"""Small helpers every layer may use; they import nothing else of the gateway.

- :mod:`.files`: atomic file writes (temp file, fsync, rename);
- :mod:`.database`: the SQLite file, its pragmas and numbered migrations;
- :mod:`.ratelog`: log a repeated problem at most once a minute, with a count.
"""
