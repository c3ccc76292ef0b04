import sys

from medgen.cli import main

sys.exit(main())
