"""``python -m gramx``: the gramx command (also what torchrun launches)."""

import sys

from gramx.cli import main

sys.exit(main())
