"""Supervised 3D segmentation: MONAI UNet trained with Dice + cross-entropy on a data set's label-map volume."""
