"""python -m styleserver.cli: the `style-transfer` command."""

import sys

from . import main

sys.exit(main())
