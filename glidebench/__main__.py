"""``python -m glidebench`` (and ``torchrun -m glidebench``): the command line of :mod:`glidebench.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
