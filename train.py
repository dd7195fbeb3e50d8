#!/usr/bin/env python
"""Train SASSNet: `python train.py --labeled 16 --data-root ../shared/data/LA` (see `--help`)."""
import sys

from sassnet_tf.train import main

if __name__ == "__main__":
    sys.exit(main())
