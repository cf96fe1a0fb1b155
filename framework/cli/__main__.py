"""``python -m framework.cli``: the ``parity`` command."""

import sys

from framework.cli.main import main

sys.exit(main())
