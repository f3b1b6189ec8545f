import sys

from wire.cli.main import main

sys.exit(main())
