"""Data: readers and writers (`io`), dataset folders and splits (`dataset_layout`), the built-in phantom dataset
(`phantom`), SDM targets (`sdm`) and the tf.data pipelines (`pipeline`, the only module importing TensorFlow).

Import the modules themselves (``from sassnet_tf.data.io import read_case``); this package imports nothing, so
reading a case never loads TensorFlow.
"""
