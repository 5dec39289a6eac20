"""``python -m devices``: the same as the ``things-device`` command."""

import sys

from devices.cli import main

if __name__ == "__main__":
    sys.exit(main())
