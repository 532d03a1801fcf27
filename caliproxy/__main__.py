"""``python -m caliproxy`` is the ``caliproxy`` command."""

import sys

from caliproxy.cli import main

sys.exit(main())
