"""``python -m engine``: the ``equitriage-engine`` command (:mod:`engine.launch`)."""

import sys

from engine.launch import main

sys.exit(main())
