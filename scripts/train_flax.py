"""Trains the Project I digit-pair classifiers with jaxdl (Flax + Optax); flags: see --help."""

import sys
from pathlib import Path

# Runnable as `python scripts/train_flax.py` from a checkout that is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxdl import compile_cache  # noqa: E402
from jaxdl.cli import main  # noqa: E402

if __name__ == "__main__":
    compile_cache.enable()  # compile once per machine, not per process (JAXDL_COMPILE_CACHE=off)
    sys.exit(main("flax"))
