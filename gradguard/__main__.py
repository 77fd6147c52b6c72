"""``python -m gradguard``: the same as the ``gradguard`` console script."""

import sys

from gradguard.cli import main

sys.exit(main())
