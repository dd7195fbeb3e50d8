"""bench/bench_train.py refuses a patch the V-Net cannot take before any work starts."""

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "bench_train.py")


def test_a_patch_not_divisible_by_16_is_named():
    out = subprocess.run([sys.executable, BENCH, "--patch", "56", "56", "40"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "--patch 56 56 40: each axis must be a positive multiple of 16" in out.stderr
