"""``python -m keel``: the ``keel`` command, for when only the interpreter is at hand."""

import sys

from keel.cli.main import main

sys.exit(main())
