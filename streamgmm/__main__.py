"""``python -m streamgmm``: the same command line as the ``streamgmm`` console script."""
import sys

from streamgmm.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
