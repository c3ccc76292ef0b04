"""Volume I/O: round trips keep data and geometry; broken inputs give one clear InputError."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
sitk = pytest.importorskip("SimpleITK")  # DICOM/NRRD/MHA I/O; absent on the bare GPU image (benchmarks/gpu)

from medgen.data.io import Volume, read_volume, reorient_to_ras, write_nifti, write_volume
from medgen.core.errors import InputError


def _rotation(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _oblique_affine() -> np.ndarray:
    """Rotated 20° about z, x axis flipped, anisotropic voxels, non-zero origin."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(20.0) @ np.diag([-0.7, 0.9, 2.5])
    affine[:3, 3] = [12.5, -30.0, 7.25]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_data_and_affine(tmp_path, suffix):
    rng = np.random.default_rng(1)
    array = rng.normal(size=(7, 6, 5)).astype(np.float32)
    affine = _oblique_affine()
    path = tmp_path / f"vol{suffix}"
    write_volume(path, Volume(array, affine))
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [0.7, 0.9, 2.5], atol=1e-6)
    assert back.shape == (7, 6, 5)


def test_itk_geometry_matches_nibabel(tmp_path):
    """ITK converts the NIfTI itself (to LPS); our LPS→RAS conversion must land on nibabel's affine."""
    rng = np.random.default_rng(2)
    array = rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    affine = _oblique_affine()
    write_nifti(tmp_path / "a.nii", array, affine)
    image = sitk.ReadImage(str(tmp_path / "a.nii"))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    via_itk = read_volume(tmp_path / "a.nrrd")
    via_nib = read_volume(tmp_path / "a.nii")
    np.testing.assert_array_equal(via_itk.array, via_nib.array)
    np.testing.assert_allclose(via_itk.affine, via_nib.affine, atol=1e-5)
    # And a world point: ITK's physical point of voxel (i, j, k) is LPS, i.e. RAS with x, y negated.
    ijk = (4, 1, 3)
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
    ras = (affine @ [*ijk, 1.0])[:3]
    np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-5)


def test_npy_gets_identity_affine(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    np.save(tmp_path / "v.npy", array)
    vol = read_volume(tmp_path / "v.npy")
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_array_equal(vol.affine, np.eye(4))


def test_single_frame_4d_is_read_as_3d(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(5, 4, 3, 1)
    write_nifti(tmp_path / "one.nii.gz", array, np.diag([2.0, 2.0, 3.0, 1.0]))
    vol = read_volume(tmp_path / "one.nii.gz")
    np.testing.assert_array_equal(vol.array, array[..., 0])
    assert vol.spacing == (2.0, 2.0, 3.0)


def test_reorient_to_ras_keeps_every_voxel_at_its_world_position():
    rng = np.random.default_rng(3)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    # Storage axes: i → posterior (-y), j → inferior (-z), k → left (-x); 1, 2, 3 mm.
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2] = -1.0, -2.0, -3.0
    affine[:, 3] = [10.0, 20.0, 30.0, 1.0]
    ras = reorient_to_ras(Volume(array, affine))
    assert ras.shape == (7, 5, 6)
    # RAS+: diagonal, positive.
    np.testing.assert_allclose(ras.affine[:3, :3], np.diag([3.0, 1.0, 2.0]))
    inverse = np.linalg.inv(ras.affine)
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 3, 1), (1, 0, 5)]:
        world = affine @ [*ijk, 1.0]
        new = np.rint(inverse @ world)[:3].astype(int)
        assert ras.array[tuple(new)] == array[ijk]


def _write_dicom_series(folder, volume_xyz: np.ndarray, spacing, origin, order) -> None:
    """One .dcm per axial slice, ImagePositionPatient in LPS; files written in the order ``order``."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.7"
    for n, k in enumerate(order):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(volume_xyz[:, :, k].T))  # (y, x) for ITK
        sl.SetSpacing(spacing[:2])
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT image storage
            "0008|0018": f"{uid}.3.{k}",
            "0008|0060": "CT",
            "0020|000d": f"{uid}.1",
            "0020|000e": f"{uid}.2",
            "0020|0013": str(n + 1),  # instance numbers deliberately NOT in slice order
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|1041": f"{position[2]:.4f}",
            "0018|0050": f"{spacing[2]:.4f}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IMG{(7 * n + 3) % 11:04d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_read_in_position_order(tmp_path):
    rng = np.random.default_rng(4)
    volume = rng.integers(-1000, 1000, size=(6, 5, 7)).astype(np.int16)
    volume[..., :] += (np.arange(7) * 100).astype(np.int16)  # each slice distinguishable
    spacing, origin = (0.75, 0.5, 2.5), (-40.0, 25.0, 100.0)
    order = [3, 0, 6, 1, 5, 2, 4]  # files written (and named) in shuffled slice order
    _write_dicom_series(tmp_path / "series", volume, spacing, origin, order)

    vol = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(vol.array, volume)
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-4)
    # Voxel (i, j, k) sits at LPS origin + (i*dx, j*dy, k*dz); in RAS x and y change sign.
    ijk = np.array([2, 3, 5])
    lps = np.asarray(origin) + ijk * spacing
    np.testing.assert_allclose((vol.affine @ [*ijk, 1.0])[:3], lps * [-1, -1, 1], atol=1e-3)
    # After reorientation z still runs inferior→superior and slices keep their order.
    ras = reorient_to_ras(vol)
    np.testing.assert_array_equal(ras.array, volume[::-1, ::-1, :])


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", "no such file"),
        ("zero-byte", "empty file"),
        ("text", "cannot read"),
        ("truncated", "cannot read"),
        ("2d", "2D image"),
        ("4d", "4D image with 3 frames"),
        ("nan", "no finite values"),
        ("suffix", "unknown file type"),
        ("empty-dir", "no DICOM series"),
    ],
)
def test_broken_inputs_raise_input_error_naming_file(tmp_path, kind, expected):
    path = tmp_path / "x.nii.gz"
    good = np.zeros((8, 8, 8), dtype=np.float32)
    if kind == "zero-byte":
        path.touch()
    elif kind == "text":
        path = _write_bytes(tmp_path / "x.nii", b"this is not an image\n" * 40)
    elif kind == "truncated":
        write_nifti(path, np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), np.eye(4))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "2d":
        write_nifti(path, good[:, :, :1], np.eye(4))
    elif kind == "4d":
        write_nifti(path, np.zeros((8, 8, 8, 3), dtype=np.float32), np.eye(4))
    elif kind == "nan":
        write_nifti(path, good * np.nan, np.eye(4))
    elif kind == "suffix":
        path = _write_bytes(tmp_path / "x.png", b"png")
    elif kind == "empty-dir":
        path = tmp_path / "dicom"
        path.mkdir()
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_truncated_gzip_is_detected_even_when_header_is_intact(tmp_path):
    # The gzip stream holds the whole header but only part of the data.
    path = tmp_path / "t.nii.gz"
    write_nifti(tmp_path / "full.nii", np.ones((20, 20, 20), dtype=np.float32), np.eye(4))
    raw = (tmp_path / "full.nii").read_bytes()
    path.write_bytes(gzip.compress(raw[: 352 + 100]))
    assert nib.load(str(path)).shape == (20, 20, 20)  # header alone looks fine
    with pytest.raises(InputError, match="cannot read"):
        read_volume(path)
