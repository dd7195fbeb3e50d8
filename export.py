#!/usr/bin/env python
"""Export a training run for TensorFlow Serving: `python export.py --run RUN --output models/sassnet` (see `--help`)."""
import sys

from sassnet_tf.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
