"""Learned deformable 3D registration: VoxelMorph (MONAI) trained on pairs of a data set's volumes."""
