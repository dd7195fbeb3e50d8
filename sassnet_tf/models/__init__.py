"""Networks: the dual-head V-Net and the SASSNet discriminator (Keras 3, channels-last).

Building blocks (`ConvBlock`, `DownBlock`, `UpBlock`) live in their own modules.
"""

from sassnet_tf.models.discriminator import Discriminator, build_discriminator
from sassnet_tf.models.vnet import VNet, build_vnet

__all__ = ["VNet", "build_vnet", "Discriminator", "build_discriminator"]
