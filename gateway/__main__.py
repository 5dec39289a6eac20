"""``python -m gateway`` is ``things-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
