"""`python -m sidecar` is `ferry`."""

import sys

from sidecar.cli import main

# Guarded: the forwarder process (multiprocessing's spawn) imports this module again.
if __name__ == "__main__":
    sys.exit(main())
