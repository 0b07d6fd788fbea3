import sys

from minimodal.cli import main

sys.exit(main())
