"""``python -m mimo_fast.cli`` (and ``torchrun ... -m mimo_fast.cli``): the ``mimo-fast`` command."""
import sys

from mimo_fast.cli import main

sys.exit(main())
