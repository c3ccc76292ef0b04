"""Reading and writing medical volumes (NIfTI, NRRD/MHA/MHD, DICOM series, .npy).

Convention: arrays are indexed ``(i, j, k)`` as nibabel does, and ``affine`` maps
voxel indices to RAS+ world coordinates in millimetres. SimpleITK images
(NRRD, MHA/MHD, DICOM) are converted on the way in and out: ITK stores arrays as
``(k, j, i)`` and uses LPS+ world coordinates, so x and y of the direction and
origin change sign.

Every problem with an input raises :class:`medgen.core.errors.InputError` with the
message ``"<path>: <reason>"``, so a batch job can record it and go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medgen.core.errors import InputError
from medgen.core.fileio import atomic_path, atomic_save_npy

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
NUMPY_SUFFIXES = (".npy",)
#: File suffixes :func:`read_volume` understands (a folder is read as a DICOM series).
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + NUMPY_SUFFIXES

# Flips x and y: LPS+ (ITK, DICOM) <-> RAS+ (nibabel, medgen).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D image with its geometry.

    ``array``: 3D, indexed ``(i, j, k)``. ``affine``: 4×4, voxel index → RAS+ mm.
    ``source``: where it was read from (a file or DICOM folder path).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine's 3×3 part)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape)


def medical_suffix(path: str | os.PathLike) -> str | None:
    """The recognised suffix of ``path`` (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def strip_medical_suffix(name: str) -> str:
    """File name without its medical suffix: ``ct_001.nii.gz`` → ``ct_001``."""
    suffix = medical_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume from NIfTI, NRRD/MHA/MHD, .npy, or a folder holding a DICOM series.

    Spacing and orientation are kept in the affine; the array is returned as
    stored (no reorientation; see :func:`reorient_to_ras`). A singleton 4th
    dimension (one frame) is dropped. A ``.npy`` file has no geometry, so it
    gets the identity affine (1 mm voxels, RAS+).

    Raises InputError for a missing, empty, truncated or unreadable file, an
    unknown suffix, an image that is not 3D (2D, or 4D with several frames),
    and an image without a single finite value.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        array, affine = _read_dicom_series(path)
    else:
        suffix = medical_suffix(path)
        if suffix is None:
            raise InputError(
                f"{path}: unknown file type (expected one of {', '.join(VOLUME_SUFFIXES)} "
                "or a folder holding a DICOM series)"
            )
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        try:
            if suffix in NIFTI_SUFFIXES:
                array, affine = _read_nifti(path)
            elif suffix in ITK_SUFFIXES:
                array, affine = _read_itk(path)
            else:
                array = np.load(path, allow_pickle=False)
                affine = np.eye(4)
        except InputError:
            raise
        except Exception as exc:  # any library error means the same to the user
            raise InputError(f"{path}: cannot read ({_describe(exc)})") from exc
    array = _as_3d(array, path)
    if not np.isfinite(array).any():
        raise InputError(f"{path}: image holds no finite values (all NaN or infinite)")
    return Volume(array=array, affine=np.asarray(affine, dtype=np.float64), source=str(path))


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


def write_volume(path: str | os.PathLike, volume: Volume) -> None:
    """Write ``volume`` atomically; the format follows the suffix.

    ``.nii``/``.nii.gz`` via nibabel; ``.nrrd``/``.mha`` via SimpleITK (single
    files, so the rename is atomic; the affine must be a rotation times a
    scaling, as ITK images cannot hold a shear); ``.npy`` writes the array only.
    """
    suffix = medical_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        write_nifti(path, volume.array, volume.affine)
    elif suffix in (".nrrd", ".mha"):
        _write_itk(Path(path), volume)
    elif suffix == ".npy":
        atomic_save_npy(path, np.asarray(volume.array))
    else:
        raise InputError(f"{path}: cannot write this file type (use .nii.gz, .nii, .nrrd, .mha or .npy)")


def reorient_to_ras(volume: Volume) -> Volume:
    """Permute/flip the array axes so they run closest to R, A, S (nibabel's closest canonical).

    The physical position of every voxel is unchanged: the affine is updated
    to match. No interpolation happens; oblique images stay oblique.
    """
    ornt = nib.orientations.io_orientation(volume.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return volume
    array = np.ascontiguousarray(nib.orientations.apply_orientation(volume.array, ornt))
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.array.shape)
    return Volume(array=array, affine=affine, source=volume.source)


# --------------------------------------------------------------------------- readers


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image")
    if len(img.shape) > 4 and any(n != 1 for n in img.shape[4:]):
        raise InputError(f"{path}: {len(img.shape)}D image of shape {img.shape}; need a 3D volume")
    _check_not_4d(img.shape, path)
    # float32 holds every integer HU value exactly and halves the memory of float64.
    array = img.get_fdata(dtype=np.float32)
    return array, img.affine


def _itk_to_ras(image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK 3D image → ((i, j, k) array, RAS+ affine)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return array, affine


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB image); "
            "need a scalar 3D volume"
        )
    size = image.GetSize()  # (x, y, z[, t])
    if image.GetDimension() == 4:
        _check_not_4d(size, path)
        image = sitk.Extract(image, list(size[:3]) + [0], [0, 0, 0, 0])
    elif image.GetDimension() != 3:
        raise InputError(f"{path}: {image.GetDimension()}D image of size {size}; need a 3D volume")
    return _itk_to_ras(image)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the DICOM series in ``folder``; slices are ordered by position, not by file name.

    GDCM (through SimpleITK) groups files by SeriesInstanceUID and sorts them
    along the slice normal using ImagePositionPatient. If the folder holds
    several series, the one with the most slices is read.
    """
    import SimpleITK as sitk

    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except Exception as exc:
        raise InputError(f"{folder}: cannot scan for DICOM files ({_describe(exc)})") from exc
    if not series_ids:
        raise InputError(f"{folder}: folder holds no DICOM series")
    series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids]
    files = max(series, key=len)
    if len(files) < 2:
        raise InputError(f"{folder}: DICOM series has a single slice; need a 3D volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except Exception as exc:
        raise InputError(f"{folder}: cannot read DICOM series ({_describe(exc)})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{folder}: colour DICOM series; need a scalar 3D volume")
    return _itk_to_ras(image)


def _check_not_4d(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) >= 4 and shape[3] > 1:
        raise InputError(
            f"{path}: 4D image with {shape[3]} frames (shape {tuple(shape)}); "
            "split it into 3D volumes first"
        )


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton dimensions beyond the third; reject anything not truly 3D."""
    array = np.asarray(array)
    if array.size == 0:
        raise InputError(f"{path}: empty image (shape {array.shape})")
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        _check_not_4d(array.shape, path)
    if array.ndim != 3:
        raise InputError(f"{path}: {array.ndim}D image of shape {array.shape}; need a 3D volume")
    if sum(n > 1 for n in array.shape) < 3:
        raise InputError(f"{path}: 2D image (shape {array.shape}); need a 3D volume")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise InputError(f"{path}: unsupported voxel type {array.dtype}")
    return array


# --------------------------------------------------------------------------- writers


def _write_itk(path: Path, volume: Volume) -> None:
    import SimpleITK as sitk

    spacing = np.asarray(volume.spacing)
    direction_ras = volume.affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0)))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (_LPS_TO_RAS @ direction_ras).ravel()])
    image.SetOrigin([float(v) for v in _LPS_TO_RAS @ volume.affine[:3, 3]])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
