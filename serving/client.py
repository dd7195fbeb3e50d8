#!/usr/bin/env python
"""Segment a scan with a served SASSNet model: a thin wrapper of ``sassnet-client`` (sassnet_tf.serving.client).

    python serving/client.py --server localhost:8500 --model sassnet --input scan.nii.gz --output mask.nii.gz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from sassnet_tf.serving.client import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
