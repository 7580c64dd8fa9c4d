"""``python -m dgmkit ...`` is ``dgm ...`` (torchrun starts processes with ``-m dgmkit``)."""

import sys

from dgmkit.cli.main import main

sys.exit(main())
