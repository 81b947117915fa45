"""``python -m diffalign`` -- the CLI; lets ``accelerate launch -m diffalign train ...`` and torchrun start it."""

import sys

from .cli import main

sys.exit(main())
