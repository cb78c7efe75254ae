import sys

from qrecipe.report import main

sys.exit(main())
