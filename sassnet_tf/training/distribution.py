"""Pick the tf.distribute strategy: one device, MirroredStrategy for several GPUs, multi-worker with TF_CONFIG."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

log = logging.getLogger("sassnet_tf")


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """`auto`: MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, MirroredStrategy for >1 GPU, else default.

    Keras 3 `fit` is broken with MultiWorkerMirroredStrategy (keras-team/keras#20585), so the trainer drives
    `strategy.run(model.train_step)` itself; that loop works for every strategy here.
    """
    if kind == "auto":
        tf_config = os.environ.get("TF_CONFIG")
        if tf_config:
            try:
                cluster = json.loads(tf_config).get("cluster", {})
            except json.JSONDecodeError as exc:
                raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
            if sum(len(v) for v in cluster.values()) > 1:
                kind = "multi_worker"
        if kind == "auto":
            kind = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "default":
        strategy = tf.distribute.get_strategy()
    else:
        raise ValueError(f"strategy {kind!r} is not one of auto, default, mirrored, multi_worker")
    log.info("strategy: %s (%s) with %d replica(s)", kind, type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that owns the output folder (task 0 of a multi-worker cluster, or the only one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def per_replica_batch(global_bs: int, strategy: tf.distribute.Strategy, name: str) -> int:
    """Split a global batch size evenly across replicas, or explain why it cannot be."""
    n = strategy.num_replicas_in_sync
    if global_bs % n:
        raise ValueError(f"data.{name} = {global_bs} is not divisible by the {n} replicas in sync")
    return global_bs // n
