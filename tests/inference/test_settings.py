"""InferenceSettings: one validation of the sliding-window settings, and their round trips."""

import pytest

from sassnet_tf.config import load_config
from sassnet_tf.inference.settings import InferenceSettings, InferenceSettingsError


@pytest.mark.parametrize("changes, message", [
    ({"stride": (8, 8, 0)}, "stride: expected three positive integers"),
    ({"stride": (8, 40, 4)}, "at most the patch size"),
    ({"patch_size": (32, 30, 16)}, "multiple of 16"),
    ({"patch_size": (32, 32)}, "three positive integers"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1"),
    ({"downsample": 1.5}, "downsample: expected an integer >= 1"),
    ({"threshold": 1.0}, "threshold: expected a number in (0, 1)"),
    ({"gaussian": "yes"}, "gaussian: expected true or false"),
    ({"normalize": "minmax"}, "normalize: 'minmax' is not one of zscore"),
])
def test_bad_settings_name_the_field(changes, message):
    with pytest.raises(InferenceSettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InferenceSettings(**{"patch_size": (32, 32, 16), "stride": (8, 8, 4), **changes})


def test_the_paper_protocol_and_its_round_trips():
    config = load_config(None)  # the reference's defaults
    settings = InferenceSettings.from_config(config)
    assert settings == InferenceSettings((112, 112, 80), (18, 18, 4), 0.5, False, config.eval.batch_size, 1)
    assert InferenceSettings.from_metadata(settings.to_metadata()) == settings
    assert settings.replace(stride=(56, 56, 40), batch_size=None).stride == (56, 56, 40)
    with pytest.raises(InferenceSettingsError, match="at most the patch size"):
        settings.replace(stride=(200, 18, 4))
    with pytest.raises(InferenceSettingsError, match="unknown keys"):
        InferenceSettings.from_metadata({**settings.to_metadata(), "preprocessing": {"clip": 3}})


def test_numpy_integers_are_counts_and_stored_as_ints():
    import json

    import numpy as np

    settings = InferenceSettings((16, 16, 16), (8, 8, 8), batch_size=np.int64(2), downsample=np.int32(2))
    assert type(settings.batch_size) is int and type(settings.downsample) is int
    json.dumps(settings.to_metadata())  # JSON-ready
