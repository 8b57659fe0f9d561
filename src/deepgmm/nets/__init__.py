"""Networks: the U-Net that maps an image to K class logits per pixel."""

from deepgmm.nets.unet import UNet

__all__ = ["UNet"]
