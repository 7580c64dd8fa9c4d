"""``python -m dgmkit ...`` is ``dgm ...`` (torchrun starts processes with ``-m dgmkit``)."""

import sys

from dgmkit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
