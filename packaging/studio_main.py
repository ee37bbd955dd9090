"""Entry point of the bundled studio: resources sit beside the bundled code."""

import os
import sys
from pathlib import Path

if getattr(sys, "frozen", False):
    os.environ.setdefault("CLP2P_RESOURCES", str(Path(sys._MEIPASS) / "resources"))

from clp2p_studio.app import main

sys.exit(main())
