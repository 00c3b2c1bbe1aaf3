"""`python -m backfill.store.embedded`: the embedded store's server process (see the package's `main`)."""

import sys

from backfill.store.embedded import main

sys.exit(main())
