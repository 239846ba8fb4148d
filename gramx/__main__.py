"""``python -m gramx``: the gramx command (also what torchrun launches)."""

import sys

from gramx.cli.app import main

sys.exit(main())
