"""Trains the Project I digit-pair classifiers with torch_reference; flags: see --help."""

import sys
from pathlib import Path

# Runnable as `python scripts/train_torch.py` from a checkout that is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxdl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("torch"))
