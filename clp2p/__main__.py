import sys

from clp2p.cli.main import main

sys.exit(main())
