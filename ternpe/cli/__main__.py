"""``python -m ternpe.cli`` (what ``ternpe train --workers N`` hands to torchrun)."""

import sys

from ternpe.cli import main

sys.exit(main())
