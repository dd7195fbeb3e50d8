"""Trainer: data, networks, optimizers, the iteration loop, checkpoints, validation and logs of one run."""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from sassnet_tf.config import Config
from sassnet_tf.training.checkpoint_store import CheckpointStore
from sassnet_tf.training.distribution import is_chief, make_strategy, per_replica_batch
from sassnet_tf.training.precision import apply_precision
from sassnet_tf.training.run_dir import RunDir, save_weights_atomic
from sassnet_tf.training.sassnet import SASSNet, patch_dice
from sassnet_tf.training.errors import TrainingDiverged, TrainingInterrupted
from sassnet_tf.training.stop_request import StopRequest
from sassnet_tf.training.torch_sgd import TorchSGD
from sassnet_tf.utils.provenance import code_version
from sassnet_tf.utils.runtime import cpu_description

log = logging.getLogger("sassnet_tf")

# Tests set this to kill the process (SIGKILL, no clean-up) right after an iteration, to prove --resume.
_KILL_AT = os.environ.get("SASSNET_TF_TEST_KILL_AT_ITERATION")

_SPEED_INTERVALS = 5  # checkpoint intervals whose median is run.json's recent_seconds_per_iteration


def _threads() -> int:
    """The threads TensorFlow's ops run on in this process (`--threads`, else every core)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def recent_seconds_per_iteration(marks: list) -> float | None:
    """Median wall seconds per iteration over the intervals between (iteration, wall time) marks: what
    `la_results status` estimates the rest of a run from. The median drops an interval in which the run was
    paused (SIGSTOP while a benchmark ran), which the mean over the run counts."""
    rates = [(t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(marks, marks[1:]) if i1 > i0]
    return round(statistics.median(rates), 3) if rates else None


def resolve_data_root(config: Config) -> tuple[str, str]:
    """Return (root, format); with no data root, generate (or reuse) the built-in phantom dataset."""
    d = config.data
    if d.root:
        return d.root, d.format
    from sassnet_tf.data.phantom import ensure_phantom_dataset

    root = ensure_phantom_dataset(n_train=d.phantom_cases, n_test=d.phantom_test_cases, shape=d.phantom_shape,
                                  seed=0)
    log.info("no data root given: using the built-in phantom dataset at %s", root)
    return root, "la"


def _read_id_list(layout, name):
    return layout.read_list(name) if name else None


class Trainer:
    """Runs (or resumes) one training run into an output folder.

    Args:
        config: the resolved configuration.
        output: run folder (created; an existing run is refused unless `resume`).
        resume: continue the run in `output` from its newest checkpoint.
        strategy: a tf.distribute strategy; default from `make_strategy()` (TF_CONFIG / GPUs).
        progress: show a progress bar.
    """

    def __init__(self, config: Config, output: str, resume: bool = False, strategy=None, progress: bool = True):
        self.config = config
        self.run = RunDir(output)
        self.resume = resume
        self.strategy = strategy or make_strategy()
        self.chief = is_chief(self.strategy)
        self.progress = progress

    # -- set-up ---------------------------------------------------------------------------------------------
    def _load_data(self):
        from sassnet_tf.data.dataset_layout import open_dataset
        from sassnet_tf.data.pipeline import load_cases

        d = self.config.data
        root, fmt = resolve_data_root(self.config)
        layout = open_dataset(root, format=fmt, downsample=d.downsample)
        labeled_ids, unlabeled_ids = layout.split(
            train_list=d.train_list, labeled=d.labeled, labeled_list=_read_id_list(layout, d.labeled_list),
            unlabeled_list=_read_id_list(layout, d.unlabeled_list))
        if d.val_list:
            val_ids = layout.read_list(d.val_list)
        else:
            # Held-out labels for model selection only: the tail of the unlabeled list stays unlabeled in training.
            val_ids = list(unlabeled_ids[-self.config.train.val_cases:]) if self.config.train.val_cases else []
        if self.config.train.mode != "sassnet":
            unlabeled_ids = []
        log.info("data: %s (%s); %d labeled, %d unlabeled, %d validation cases", root, layout.format,
                 len(labeled_ids), len(unlabeled_ids), len(val_ids))
        self.labeled_cases = load_cases(layout, labeled_ids, read_label=True)
        self.unlabeled_cases = load_cases(layout, unlabeled_ids, read_label=False)
        self.val_cases = load_cases(layout, val_ids, read_label=True) if val_ids else []
        self.data_root = root

    def _build(self):
        from sassnet_tf.models import build_discriminator, build_vnet
        from sassnet_tf.schedules import StepDecay

        m, t = self.config.model, self.config.train
        with self.strategy.scope():
            self.vnet = build_vnet(n_filters=m.n_filters, normalization=m.normalization, dropout=m.dropout)
            self.discriminator = build_discriminator(ndf=m.ndf) if t.mode == "sassnet" else None
            self.model = SASSNet(self.vnet, self.discriminator, mode=t.mode, sdm_weight=t.sdm_weight,
                                 consistency=t.consistency, rampup_interval=t.rampup_interval,
                                 rampup_length=t.rampup_length, d_reuse_forward=t.d_reuse_forward,
                                 seg_loss=t.seg_loss)
            lr = StepDecay(t.base_lr, t.lr_decay_steps, t.lr_decay_factor)
            net_opt = TorchSGD(lr, momentum=t.momentum, coupled_weight_decay=t.weight_decay)
            d_opt = None
            if t.mode == "sassnet":
                # torch Adam's eps is 1e-8 (Keras defaults to 1e-7).
                d_opt = keras.optimizers.Adam(t.d_lr, beta_1=t.d_beta_1, beta_2=t.d_beta_2, epsilon=1e-8)
            self.model.compile(net_opt, d_opt)
            self.model.build_optimizers()
        groups = {"vnet": lambda: self.vnet.variables, "network_optimizer": lambda: self.model.optimizer.variables}
        if self.discriminator is not None:
            groups.update(discriminator=lambda: self.discriminator.variables,
                          discriminator_optimizer=lambda: self.model.d_optimizer.variables)
        self.store = CheckpointStore(self.run.checkpoints, groups, keep=t.keep_checkpoints)

    def _datasets(self, start_step: int):
        from sassnet_tf.data.pipeline import make_train_dataset, make_validation_dataset

        d, t = self.config.data, self.config.train
        lbs = per_replica_batch(d.labeled_bs, self.strategy, "labeled_bs")
        ubs = per_replica_batch(d.unlabeled_bs, self.strategy, "unlabeled_bs") if t.mode == "sassnet" else 0

        def dataset_fn(ctx: tf.distribute.InputContext):
            # Each input pipeline draws its own stream: same seed on every worker would repeat the same patches.
            return make_train_dataset(
                self.labeled_cases, self.unlabeled_cases, patch_size=d.patch_size, labeled_bs=lbs,
                unlabeled_bs=ubs, seed=t.seed + 7919 * ctx.input_pipeline_id, start_step=start_step,
                num_parallel_calls=d.num_parallel_calls or tf.data.AUTOTUNE, prefetch=d.prefetch,
                intensity_scale=d.intensity_scale)

        train = self.strategy.distribute_datasets_from_function(dataset_fn)
        val = None
        if self.val_cases and t.val_every:
            val = make_validation_dataset(self.val_cases, d.patch_size, batch_size=max(1, d.labeled_bs))
        return train, val

    # -- the loop -------------------------------------------------------------------------------------------
    def _train_function(self):
        model, strategy = self.model, self.strategy

        @tf.function
        def train_fn(iterator):
            logs = strategy.run(model.train_step, args=(next(iterator),))
            # Trackers are replica-local; the first replica's view after the all-reduce is representative.
            return {k: strategy.experimental_local_results(v)[0] for k, v in logs.items()}

        return train_fn

    def _validate(self, val_ds) -> float:
        # Runs on the chief alone, so no metric variables (whose reads may be collective across workers).
        if not hasattr(self, "_val_fn"):
            self._val_fn = tf.function(lambda b: patch_dice(self.vnet, b["labeled_image"], b["label"]))
        scores = [self._val_fn(batch).numpy() for batch in val_ds]
        return float(np.mean(np.concatenate(scores)))

    def _save(self, iteration: int, state: dict) -> None:
        if not self.chief:  # variables are identical on every worker; the chief alone writes
            return
        self.store.save(iteration)
        save_weights_atomic(self.vnet, self.run.weights_path("vnet", "last"))
        if self.discriminator is not None:
            save_weights_atomic(self.discriminator, self.run.weights_path("discriminator", "last"))
        state["iteration"] = iteration
        state["train_seconds"] = self._train_seconds()
        if state.get("sessions"):
            state["sessions"][-1]["to_iteration"] = iteration
        recent = self._recent_seconds_per_iteration(iteration)
        if recent is not None:
            state["recent_seconds_per_iteration"] = recent
        self.run.write_state(state)

    def _recent_seconds_per_iteration(self, iteration: int) -> float | None:
        marks = self._checkpoint_marks
        marks.append((iteration, time.time()))
        del marks[:-(_SPEED_INTERVALS + 1)]
        return recent_seconds_per_iteration(marks)

    def _train_seconds(self) -> float:
        """Training wall time summed over every session of this run, up to now (what RESULTS.md reports)."""
        return round(self._seconds_before + time.time() - self._session_start, 1)

    def _log_images(self, writer, iteration: int, batch) -> None:
        image = batch["labeled_image"][:1]
        out = self.vnet(image, training=False)
        prob = tf.sigmoid(tf.cast(out["seg"], tf.float32))
        z = image.shape[3] // 2

        def to_img(x):
            x = tf.cast(x[..., z, :], tf.float32)
            lo, hi = tf.reduce_min(x), tf.reduce_max(x)
            return (x - lo) / tf.maximum(hi - lo, 1e-6)

        with writer.as_default(step=iteration):
            tf.summary.image("image", to_img(image))
            tf.summary.image("label", tf.cast(batch["label"][:1, :, :, z, :], tf.float32))
            tf.summary.image("probability", prob[..., z, :])
            tf.summary.image("sdm", (tf.cast(out["sdm"], tf.float32)[..., z, :] + 1.0) / 2.0)

    def fit(self) -> dict:
        """Train until `train.iterations`; return the final run state (run.json)."""
        try:
            return self._prepare_and_fit()
        finally:
            self.run.release()  # the folder lock that `check` / `prepare` took (run_dir.py)

    def _prepare_and_fit(self) -> dict:
        t = self.config.train
        if self.chief:  # refuse a bad --output before the (slow) data loading, and write nothing before the data
            self.run.check(self.config, self.resume)  # loaded: a typo in --data-root leaves no run folder behind
        precision = apply_precision(t.precision)
        keras.utils.set_random_seed(t.seed)
        self._load_data()
        state = self.run.prepare(self.config, self.resume) if self.chief else {}
        try:
            return self._fit(state, precision)
        except BaseException:
            # A new run that fails or is stopped before its first checkpoint leaves nothing to resume: remove it,
            # so the same --output can be used again (with a corrected config, too).
            if self.chief and self.run.discard_new():
                log.warning("%s: removed the new run folder, which never reached a checkpoint", self.run.path)
            raise

    def _fit(self, state: dict, precision: str) -> dict:
        t = self.config.train
        self._build()
        if self.resume:
            latest = self.store.latest()
            if latest is None:
                log.warning("%s: no checkpoint yet; starting from iteration 0", self.run.path)
            else:
                self.store.restore(latest)
                log.info("resumed from %s", latest)
        start = int(self.model.optimizer.iterations.numpy())
        if start >= t.iterations:
            log.info("run already at iteration %d of %d; nothing to do", start, t.iterations)
            return state
        state.update(status="running", precision=precision, data_root=self.data_root)
        # Which code on which machine trained which iterations: a run resumed on another CPU kind or after a code
        # change is not the same experiment, and a result's record must say so.
        state.setdefault("sessions", []).append({
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_iteration": start, "to_iteration": start,
            "code": code_version(), "cpu": cpu_description(), "threads": _threads(), "precision": precision})
        if self.chief:  # a resumed run says "running" now, not at its first checkpoint (a SASSNet one: ~15 min)
            self.run.write_state(state)
        train_ds, val_ds = self._datasets(start)
        iterator = iter(train_ds)
        train_fn = self._train_function()
        writer = tf.summary.create_file_writer(self.run.logs) if self.chief else tf.summary.create_noop_writer()
        image_batch = next(iter(val_ds)) if val_ds is not None else None
        bar = keras.utils.Progbar(t.iterations, stateful_metrics=None, verbose=1 if self.progress else 0)
        bar.update(start)
        best = (state.get("best") or {}).get("dice", -math.inf)
        t0 = time.time()
        # Wall time of earlier sessions, as saved with the checkpoint this session resumed from.
        self._seconds_before, self._session_start = float(state.get("train_seconds") or 0.0), t0
        self._checkpoint_marks = [(start, t0)]  # (iteration, wall time) at this session's checkpoints
        with StopRequest() as stop:
            iteration = self._loop(start, train_fn, iterator, writer, val_ds, image_batch, bar, best, state, stop)
        writer.flush()
        state.update(status="completed", iteration=iteration, train_seconds=self._train_seconds(),
                     seconds_per_iteration=(time.time() - t0) / max(1, iteration - start))
        if self.chief:
            self.run.write_state(state)
        return state

    def _loop(self, start, train_fn, iterator, writer, val_ds, image_batch, bar, best, state, stop) -> int:
        """Iterations start + 1 .. train.iterations; returns the last. Raises TrainingDiverged on a non-finite loss
        and TrainingInterrupted, after a checkpoint, when `stop` saw SIGINT or SIGTERM."""
        t = self.config.train
        t0 = self._session_start
        last_good = start
        iteration = start
        for iteration in range(start + 1, t.iterations + 1):
            logs = {k: float(v) for k, v in train_fn(iterator).items()}
            bad = [k for k, v in logs.items() if not math.isfinite(v)]
            if bad:
                state.update(status="diverged", iteration=last_good)
                if self.chief:
                    self.run.write_state(state)
                advice = "lower train.base_lr or use --precision float32"
                raise TrainingDiverged(
                    f"iteration {iteration}: non-finite {', '.join(bad)} ({logs}); stopped. " + (
                        f"The last good checkpoint (iteration {last_good}) is kept in {self.run.checkpoints}; "
                        f"{advice}, then --resume" if last_good else f"No checkpoint was reached; {advice}"))
            if self.progress:
                bar.update(iteration, [(k, v) for k, v in logs.items() if k in ("loss", "dice_loss", "d_loss")])
            if iteration % t.log_every == 0 or iteration == t.iterations:
                with writer.as_default(step=iteration):
                    for k, v in logs.items():
                        tf.summary.scalar(f"train/{k}", v)
                    tf.summary.scalar("train/seconds_per_iteration", (time.time() - t0) / (iteration - start))
                for tracker in self.model._trackers.values():
                    tracker.reset_state()
            if val_ds is not None and self.chief and (iteration % t.val_every == 0 or iteration == t.iterations):
                dice = self._validate(val_ds)
                with writer.as_default(step=iteration):
                    tf.summary.scalar("val/dice", dice)
                log.info("iteration %d: validation Dice %.4f", iteration, dice)
                if dice > best:
                    best = dice
                    save_weights_atomic(self.vnet, self.run.weights_path("vnet", "best"))
                    state["best"] = {"dice": dice, "iteration": iteration}
            if image_batch is not None and self.chief and t.image_every and iteration % t.image_every == 0:
                self._log_images(writer, iteration, image_batch)
            if iteration % t.checkpoint_every == 0 or iteration == t.iterations:
                self._save(iteration, state)
                last_good = iteration
            if _KILL_AT and iteration == int(_KILL_AT):
                os.kill(os.getpid(), signal.SIGKILL)  # testing hook: a hard kill, as by the OOM killer
            if stop.signum is not None:
                self._interrupt(iteration, last_good, writer, state, stop.signum)
        return iteration

    def _interrupt(self, iteration: int, last_saved: int, writer, state: dict, signum: int) -> None:
        """Checkpoint `iteration` (unless just saved), mark the run interrupted and raise TrainingInterrupted."""
        writer.flush()
        if last_saved != iteration:
            self._save(iteration, state)
        state.update(status="interrupted", iteration=iteration, train_seconds=self._train_seconds())
        if self.chief:
            self.run.write_state(state)
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} after iteration {iteration} of {self.config.train.iterations}; "
            f"checkpoint saved. Continue with: python train.py --output {self.run.path} --resume", signum)
