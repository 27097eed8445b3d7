import sys

from ehrscale.cli import main

sys.exit(main())
