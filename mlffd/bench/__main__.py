"""``python -m mlffd.bench worker CASE_JSON``: one measurement (internal; use ``mlffd bench``)."""

import sys

from mlffd.bench.workers import main

sys.exit(main(sys.argv[1:]))
