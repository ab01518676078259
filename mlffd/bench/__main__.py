"""``python -m mlffd.bench worker CASE_JSON``: one measurement (internal; use ``mlffd bench``)."""

import sys

from mlffd.bench.workers import _main

sys.exit(_main(sys.argv[1:]))
