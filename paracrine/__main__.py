"""`python -m paracrine`: the same as the `paracrine` command."""

import sys

from .cli import main

sys.exit(main())
