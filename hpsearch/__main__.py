"""``python -m hpsearch``: the same as the ``hpsearch`` command."""

import sys

from .cli import main

sys.exit(main())
