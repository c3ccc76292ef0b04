"""Supervised 3D residual UNet for image-to-image tasks (the RED-CNN-style baseline of supervised denoising)."""
