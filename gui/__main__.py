"""``python -m gui [SLIDE]``."""

from gui.app import main

raise SystemExit(main())
