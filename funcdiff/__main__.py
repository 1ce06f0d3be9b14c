"""``python -m funcdiff`` is the same as the ``funcdiff`` command."""

import sys

from funcdiff.cli import main

sys.exit(main())
