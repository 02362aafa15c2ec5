import sys

from conflow.cli.main import main

sys.exit(main())
