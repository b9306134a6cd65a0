"""`python -m sidecar` is `ferry`."""

import sys

from sidecar.cli import main

sys.exit(main())
