"""`python -m analysis EXPORT -o report.html [--format json]`: see analysis.cli."""

import sys

from .cli import main

sys.exit(main())
