import sys

from diced.cli import main

sys.exit(main())
