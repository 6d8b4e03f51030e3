"""`python -m people`: the same as the `people` command."""

from __future__ import annotations

import sys

from people.cli.main import main

sys.exit(main())
