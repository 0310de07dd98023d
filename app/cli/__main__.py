"""`python -m app.cli`: the same as the `sftvsrl` console script."""
import sys

from . import main

sys.exit(main())
