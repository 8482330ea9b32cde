import sys

from cad_recode.cli import main

sys.exit(main())
