"""``python -m ublk_gadget`` is ``ublk-gadget``."""

import sys

from .cli import main

sys.exit(main())
