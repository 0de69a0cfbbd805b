"""``python -m kdforge ...`` (same as the ``kdforge`` console script)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
