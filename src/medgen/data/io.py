"""Reading and writing medical volumes (NIfTI, NRRD/MHA/MHD, DICOM series, .npy).

Convention: arrays are indexed ``(i, j, k)`` as nibabel does, and ``affine`` maps
voxel indices to RAS+ world coordinates in millimetres.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from medgen.fileio import atomic_path


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a 3D array as NIfTI-1 (``.nii`` or ``.nii.gz``) atomically.

    ``affine`` (4×4) maps voxel indices to RAS+ millimetres; it is written as
    both the sform and the qform (code 1, scanner) so every reader agrees on
    orientation and spacing.
    """
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
