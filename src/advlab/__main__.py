"""`python -m advlab`: the same as the `advlab` console script (handy where the package is on
PYTHONPATH but not installed, e.g. a borrowed GPU machine)."""

import sys

from advlab.cli.main import main

sys.exit(main())
