"""Trainer helpers that need no training run (train.py end to end is in test_train_cli.py)."""

from sassnet_tf.training.trainer import recent_seconds_per_iteration


def test_recent_speed_is_the_median_interval_so_a_paused_one_does_not_count():
    # checkpoints every 50 iterations at 1 s each, but the run was stopped (SIGSTOP) 950 s in the second interval
    marks = [(0, 0.0), (50, 50.0), (100, 1050.0), (150, 1100.0), (200, 1150.0)]
    assert recent_seconds_per_iteration(marks) == 1.0
    assert recent_seconds_per_iteration(marks[:2]) == 1.0
    assert recent_seconds_per_iteration(marks[:1]) is None  # no interval yet: status falls back to the mean
