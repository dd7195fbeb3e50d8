"""A tiny trained-model stand-in for inference tests: a run folder with random V-Net weights, and its export."""

import os


def make_run_and_export(root, downsample=2, seed=4):
    """(run folder, model base path) of a V-Net n_filters 2, patch 32x32x16, stride 16/16/8, float32."""
    import keras

    from sassnet_tf.config import load_config, save_config
    from sassnet_tf.export import export_saved_model
    from sassnet_tf.inference.settings import InferenceSettings
    from sassnet_tf.models import build_vnet
    from sassnet_tf.training.run_dir import RunDir

    config = load_config(None, {"model.n_filters": 2, "data.patch_size": "[32,32,16]", "data.downsample": downsample,
                                "eval.stride": "[16,16,8]", "eval.batch_size": 2, "train.precision": "float32"})
    run = RunDir(os.path.join(root, "run"))
    os.makedirs(run.weights, exist_ok=True)
    keras.utils.set_random_seed(seed)
    vnet = build_vnet(n_filters=2)
    save_config(config, run.config_path)
    vnet.save_weights(run.weights_path("vnet", "best"))
    s = InferenceSettings.from_config(config)
    base = os.path.join(root, "models", "sassnet")
    export_saved_model(vnet, base, 1, patch_size=s.patch_size, stride=s.stride, threshold=s.threshold,
                       gaussian=s.gaussian, batch_size=s.batch_size,
                       preprocessing={"normalize": s.normalize, "downsample": s.downsample}, config=config)
    return run.path, base
