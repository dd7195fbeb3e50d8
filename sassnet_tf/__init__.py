"""sassnet-tf: shape-aware semi-supervised 3D segmentation (SASSNet, MICCAI 2020) in Keras 3 / TensorFlow.

Layout: ``data/`` readers, phantom data, SDM targets and tf.data pipelines; ``models/`` the dual-head V-Net and
the discriminator; ``losses``/``schedules`` pure functions; ``training/`` the SASSNet trainer; ``inference/``
sliding-window inference; ``metrics``; ``evaluate``; ``export/`` SavedModel export; ``serving/`` a local
TF-Serving-compatible server and the gRPC client.
"""

__version__ = "0.1.0"

from sassnet_tf.utils.runtime import default_onednn_on

# Before anything imports TensorFlow: its oneDNN kernels are several times faster on every x86 CPU we measured.
default_onednn_on()
