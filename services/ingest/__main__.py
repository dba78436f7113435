"""`python -m services.ingest [serve|replay|simulate]`, the same as `ecoute ingest ...`."""

import sys

from services.ingest.cli import main

if __name__ == "__main__":
    sys.exit(main())
