"""Two-domain phantom sets (`medgen phantoms --domain A|B|both`): the same subjects rendered on
a second CT scanner or in T2 contrast, with the shift's parameters measurable in the images."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen.cli import main
from medgen.data.dataset import VolumeDataset
from medgen.data.phantoms import domains, generate, thorax_ct, volume_seed
from medgen.data.phantoms.phantom import Phantom
from medgen.data.preprocess import PreprocessSettings, preprocess_folder

torch.set_num_threads(1)

B = domains.THORAX_B
SEEDS = range(4)  # subjects pooled by the measurements in uniform regions


@lru_cache(maxsize=None)
def thorax(size, seed, spacing=None):
    """Subject ``seed`` of data-set seed 0: (its seed, the phantom, its B rendering, B without noise)."""
    subject_seed = volume_seed(0, seed)
    ph = generate("thorax-ct", size, subject_seed, spacing=spacing)
    b = domains.render(ph, "B", subject_seed)
    b_clean = domains.scan_ct(ph, replace(B, noise_hu=0.0), subject_seed)
    return subject_seed, ph, b, b_clean


def uniform_blood(ph) -> np.ndarray:
    """Heart and great vessels two voxels in from their edge: noise-free values within a few HU."""
    return ndimage.binary_erosion(ph.volumes["tissue"] == thorax_ct.BLOOD, iterations=2)


def phantoms(*argv: str) -> int:
    return main(["phantoms", *argv])


def read_manifest(folder: Path) -> list[dict]:
    with (folder / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def noise_fields(ph, b, b_clean) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's noise (image minus its noise-free rendering) in the body, 0 elsewhere."""
    body = ph.masks["body"] & (b_clean > -990)
    return np.where(body, ph.array - ph.noise_free, 0.0), np.where(body, b - b_clean, 0.0)


def lag1_corr(a: np.ndarray, axis: int) -> float:
    a = np.moveaxis(a, axis, 0)
    return float(np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1])


# -- domain A is today's output --------------------------------------------------------------


def test_domain_a_is_the_default_output_byte_for_byte(tmp_path):
    common = ("--kind", "thorax-ct", "--n", "2", "--shape", "20,16,24", "--seed", "3", "--nodules")
    assert phantoms(*common, "--out", str(tmp_path / "default")) == 0
    assert phantoms(*common, "--domain", "A", "--out", str(tmp_path / "a")) == 0

    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digests(tmp_path / "a") == digests(tmp_path / "default")
    rows = read_manifest(tmp_path / "a")
    # no domain columns and no domain entry: the manifest and phantoms.json are those of earlier versions
    assert list(rows[0]) == ["id", "file", "kind", "label", "lung_volume_ml", "bone_volume_ml", "emphysema_pct",
                             "body_size_mm", "heart_volume_ml", "noise_hu", "nodule_count", "nodule_positions",
                             "tissue"]
    meta = json.loads((tmp_path / "a" / "phantoms.json").read_text())
    assert "domain" not in meta and "domains" not in meta and list(meta["volumes"]) == ["tissue"]
    for i, row in enumerate(rows):
        ph = generate("thorax-ct", (20, 16, 24), volume_seed(3, i), nodules=True)
        assert np.array_equal(load(tmp_path / "a" / row["file"]), ph.array.astype(np.int16))
        assert domains.render(ph, "A", volume_seed(3, i)) is ph.array


# -- thorax domain B: a second scanner -----------------------------------------------------------


def test_thorax_b_is_the_same_subject_on_another_scanner():
    seed, ph, b, _ = thorax(32, 0)
    again = generate("thorax-ct", 32, seed)
    # deterministic in (seed, domain), and computed from the noise-free image of the same anatomy
    assert np.array_equal(domains.render(again, "B", seed), b)
    assert not np.array_equal(domains.render(again, "B", seed + 1), b)
    assert b.dtype == np.float32 and b.shape == ph.array.shape
    assert np.array_equal(b, np.round(b)) and b.min() >= thorax_ct.HU_MIN and b.max() <= thorax_ct.HU_MAX
    body = ph.masks["body"]
    assert np.abs(b - ph.array)[body].mean() > 10.0
    # the same anatomy: air, lung and bone sit where they sit in A (B's HU bands calibrated)
    for low, high in ((-2000, -900), (-900, -500), (300, 4000)):
        in_a = (low <= ph.array) & (ph.array < high)
        in_b = (B.hu_gain * low + B.hu_offset <= b) & (b < B.hu_gain * high + B.hu_offset)
        assert (in_a & in_b).sum() > 0.8 * max(in_a.sum(), in_b.sum())
    assert np.corrcoef(b[body], ph.array[body])[0, 1] > 0.97


def test_thorax_b_hu_offset_in_a_uniform_region_is_the_configured_calibration():
    measured, expected, weights = [], [], []
    for seed in SEEDS:
        _, ph, b, b_clean = thorax(48, seed)
        region = uniform_blood(ph)
        assert region.sum() > 100
        assert ph.noise_free[region].std() < 3.0  # uniform before noise
        a_mean = float(ph.array[region].mean())
        measured.append(float(b[region].mean()) - a_mean)
        expected.append((B.hu_gain - 1.0) * a_mean + B.hu_offset)
        weights.append(int(region.sum()))
        # without noise the calibration is all there is: HU_B = gain * HU + offset (kernel and slab
        # only average the few HU the region varies by)
        calibrated = B.hu_gain * float(ph.noise_free[region].mean()) + B.hu_offset
        assert float(b_clean[region].mean()) == pytest.approx(calibrated, abs=1.0)
    # about +40 HU at blood (~40 HU), within the noise of both images' means over the region
    assert np.average(expected, weights=weights) == pytest.approx(B.hu_offset + 0.04 * 45, abs=1.5)
    assert np.average(measured, weights=weights) == pytest.approx(np.average(expected, weights=weights), abs=4.0)


def test_thorax_b_noise_has_the_configured_std_and_a_keeps_its_own():
    ratio_a, ratio_b = [], []
    for seed in SEEDS:
        _, ph, b, b_clean = thorax(48, seed)
        region = uniform_blood(ph)
        ratio_a.append(float(ph.array[region].std()) / ph.factors["noise_hu"])
        ratio_b.append(float(b[region].std()) / B.noise_hu)
        # the whole noise field of B (image minus its noise-free rendering) inside the body
        inside = ph.masks["body"] & (b_clean > -990)
        noise_b = (b - b_clean)[inside]
        assert noise_b.std() == pytest.approx(B.noise_hu, rel=0.03)
        assert abs(float(noise_b.mean())) < 0.5
        # B's noise is its own: independent of A's
        noise_a = (ph.array - ph.noise_free)[inside]
        assert abs(np.corrcoef(noise_a, noise_b)[0, 1]) < 0.1
    assert ph.factors["noise_hu"] > 1.4 * B.noise_hu  # the two domains differ clearly
    assert np.mean(ratio_a) == pytest.approx(1.0, abs=0.12)
    assert np.mean(ratio_b) == pytest.approx(1.0, abs=0.12)


def test_thick_slices_correlate_adjacent_slices_of_b_more_than_of_a():
    # 2.5 mm slices: the 5 mm slab spans two of them; 12 mm in-plane: the 3 mm kernel barely shows
    _, ph, b, b_clean = thorax((24, 24, 32), 0, (12.0, 12.0, 2.5))
    noise_a, noise_b = noise_fields(ph, b, b_clean)
    assert lag1_corr(noise_b, 2) > lag1_corr(noise_a, 2) + 0.2
    assert lag1_corr(noise_b, 2) > 0.65
    assert lag1_corr(noise_b, 0) == pytest.approx(lag1_corr(noise_a, 0), abs=0.08)
    # the anatomy too: B's slices differ less from their neighbours than A's noise-free ones do
    body = ph.masks["body"][..., 1:]
    step_a = np.abs(np.diff(ph.noise_free, axis=2))[body].mean()
    step_b = np.abs(np.diff(b_clean, axis=2))[body].mean()
    assert step_b < 0.95 * B.hu_gain * step_a


def test_the_smoother_kernel_coarsens_b_noise_in_plane():
    # 1.5 mm in-plane: the 3 mm kernel spans two voxels; 12 mm slices: the 5 mm slab barely shows
    _, ph, b, b_clean = thorax((32, 32, 16), 0, (1.5, 1.5, 12.0))
    noise_a, noise_b = noise_fields(ph, b, b_clean)
    for axis in (0, 1):
        assert lag1_corr(noise_b, axis) > lag1_corr(noise_a, axis) + 0.2
    assert lag1_corr(noise_b, 2) == pytest.approx(lag1_corr(noise_a, 2), abs=0.1)


def test_kernel_and_slab_have_the_configured_widths_in_mm():
    """A thin sheet through a noise-free image: its profile's variance is the kernel's or the slab's."""
    scanner = domains.CtScanner(kernel_fwhm_mm=3.0, slice_thickness_mm=5.0, noise_hu=0.0)
    spacing = (0.5, 0.5, 1.0)

    def scanned(axis: int) -> np.ndarray:
        volume = np.zeros((33, 33, 33), dtype=np.float32)
        volume[(slice(None),) * axis + (16,)] = 3000.0
        return domains.scan_ct(Phantom("thorax-ct", volume, spacing, {}, noise_free=volume), scanner, 0)

    def variance_mm2(profile: np.ndarray, step: float) -> float:
        t = (np.arange(profile.size) - 16) * step
        return float((profile * t**2).sum() / profile.sum())

    along_z = scanned(2)[16, 16, :]
    assert along_z.sum() == pytest.approx(3000.0, abs=4)  # a slab average keeps the mean
    # box of the slice thickness convolved with linear interpolation: T²/12 + dz²/6 (exact for T/dz whole)
    assert variance_mm2(along_z, 1.0) == pytest.approx(5.0**2 / 12 + 1.0 / 6, rel=0.01)
    along_x = scanned(0)[:, 16, 16]
    sigma = 3.0 / (2 * np.sqrt(2 * np.log(2)))
    assert along_x.sum() == pytest.approx(3000.0, abs=4)
    assert variance_mm2(along_x, 0.5) == pytest.approx(sigma**2, rel=0.02)
    # the kernel acts in the axial plane only; the slab along z only
    assert np.array_equal(scanned(0)[:, :, 3], scanned(0)[:, :, 29])
    assert np.array_equal(scanned(2)[3], scanned(2)[29])
    assert domains.slab_weights(0.0).tolist() == [1.0]
    assert domains.slab_weights(2.0).tolist() == [0.25, 0.5, 0.25]


# -- brain domain B: T2 contrast --------------------------------------------------------------


def test_brain_b_is_the_t2_rendering_of_the_same_subject(tmp_path):
    common = ("--kind", "brain-mri", "--n", "2", "--size", "16", "--seed", "4")
    assert phantoms(*common, "--domain", "B", "--out", str(tmp_path / "b")) == 0
    assert phantoms(*common, "--out", str(tmp_path / "a")) == 0
    rows_a, rows_b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b)):
        ph = generate("brain-mri", 16, volume_seed(4, i))
        image = load(tmp_path / "b" / row_b["file"])
        assert image.dtype == np.float32 and np.array_equal(image, ph.volumes["t2"])
        assert np.array_equal(image, load(tmp_path / "a" / row_a["t2"]))
        assert np.array_equal(load(tmp_path / "b" / row_b["tissue"]), load(tmp_path / "a" / row_a["tissue"]))
        # the same subject: the same ground truth
        assert {k: row_b[k] for k in row_a if k not in ("t2",)} == {k: row_a[k] for k in row_a if k != "t2"}
        assert (row_b["domain"], row_b["b_weighting"]) == ("B", "T2")
    assert "t2" not in rows_b[0] and not (tmp_path / "b" / "t2").exists()  # the T2 contrast is the image
    meta = json.loads((tmp_path / "b" / "phantoms.json").read_text())
    assert meta["domain"] == "B" and meta["intensity"].startswith("T2")
    assert meta["domains"]["A"]["weighting"] == "T1" and meta["domains"]["B"]["weighting"] == "T2"
    assert list(meta["volumes"]) == ["tissue"]


# -- both: A as the image, B alongside as held-out ground truth ---------------------------------


def test_thorax_sets_a_b_and_both_share_subjects_and_both_holds_aligned_pairs(tmp_path):
    common = ("--kind", "thorax-ct", "--n", "2", "--size", "20", "--seed", "6")
    for domain in ("A", "B", "both"):
        assert phantoms(*common, "--domain", domain, "--out", str(tmp_path / domain)) == 0
    rows = {d: read_manifest(tmp_path / d) for d in ("A", "B", "both")}
    for i in range(2):
        a, b, both = (rows[d][i] for d in ("A", "B", "both"))
        tissue = load(tmp_path / "A" / a["tissue"])
        assert np.array_equal(load(tmp_path / "B" / b["tissue"]), tissue)
        assert np.array_equal(load(tmp_path / "both" / both["tissue"]), tissue)
        # the same subject, the same factors and label in every domain
        assert {k: b[k] for k in a} == a and {k: both[k] for k in a} == a
        image_a, image_b = load(tmp_path / "A" / a["file"]), load(tmp_path / "B" / b["file"])
        assert image_b.dtype == np.int16 and not np.array_equal(image_a, image_b)
        # both: the A image and, voxel-aligned, the B rendering of the same subject
        pair = nib.load(str(tmp_path / "both" / both["domain_b"]))
        assert both["domain_b"] == f"domain_b/{both['id']}.nii.gz"
        assert np.array_equal(load(tmp_path / "both" / both["file"]), image_a)
        assert np.array_equal(np.asarray(pair.dataobj), image_b) and pair.get_data_dtype() == np.int16
        assert np.array_equal(pair.affine, nib.load(str(tmp_path / "A" / a["file"])).affine)
        assert (b["domain"], both["domain"]) == ("B", "A")
        assert {k: float(b[f"b_{k}"]) for k in ("kernel_fwhm_mm", "slice_thickness_mm", "noise_hu", "hu_gain",
                                                 "hu_offset")} == {"kernel_fwhm_mm": 3.0, "slice_thickness_mm": 5.0,
                                                                   "noise_hu": 8.0, "hu_gain": 1.04, "hu_offset": 40.0}
    assert list(rows["both"][0])[-2:] == ["tissue", "domain_b"]
    meta = json.loads((tmp_path / "both" / "phantoms.json").read_text())
    assert meta["domain"] == "both" and meta["domains"]["B"]["noise_hu"] == B.noise_hu
    assert meta["volumes"]["domain_b"] == {"kind": "intensity", "dtype": "int16",
                                           "units": "Hounsfield units, domain B (second scanner)"}
    # rewriting the folder as an A set takes domain_b away
    assert phantoms(*common, "--out", str(tmp_path / "both")) == 0
    assert not (tmp_path / "both" / "domain_b").exists()


def test_brain_both_adds_the_t2_rendering_as_domain_b(tmp_path):
    assert phantoms("--kind", "brain-mri", "--n", "1", "--size", "16", "--domain", "both",
                    "--out", str(tmp_path)) == 0
    row = read_manifest(tmp_path)[0]
    ph = generate("brain-mri", 16, volume_seed(0, 0))
    assert np.array_equal(load(tmp_path / row["file"]), ph.array)
    assert np.array_equal(load(tmp_path / row["domain_b"]), ph.volumes["t2"])
    assert list(json.loads((tmp_path / "phantoms.json").read_text())["volumes"]) == ["tissue", "t2", "domain_b"]


def test_preprocess_carries_domain_b_in_the_image_window(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert phantoms("--kind", "thorax-ct", "--n", "1", "--size", "24", "--domain", "both", "--out", str(raw)) == 0
    summary = preprocess_folder(raw, data, PreprocessSettings("ct", 32), progress=False, log=lambda msg: None)
    assert summary.failed == []
    info = json.loads((data / "preprocess.json").read_text())
    assert info["volumes"]["domain_b"]["kind"] == "intensity"
    item = VolumeDataset(data, split="all", keys=("image", "domain_b", "tissue"))[0]
    a, b, tissue = (item[k][0].numpy() for k in ("image", "domain_b", "tissue"))
    assert a.shape == b.shape == tissue.shape
    # the same HU window for both: B's blood is brighter by its calibration, air is air in both
    window = 600.0 + 1024.0  # normalised [-1, 1] spans the HU window [-1024, 600]
    blood = ndimage.binary_erosion(tissue == thorax_ct.BLOOD)
    assert (b[blood].mean() - a[blood].mean()) * window / 2 == pytest.approx(42.0, abs=12.0)
    assert np.abs(a - b)[tissue == thorax_ct.BACKGROUND].mean() < 0.02


# -- the command line ----------------------------------------------------------------------------


def test_bad_domain_is_a_one_line_usage_error(tmp_path, capsys):
    code = phantoms("--kind", "thorax-ct", "--n", "1", "--size", "16", "--domain", "C", "--out", str(tmp_path / "x"))
    err = capsys.readouterr().err
    assert code == 2
    assert err == "medgen phantoms: error: --domain must be A, B or both, got 'C'\n"
    assert not (tmp_path / "x").exists()


def test_help_states_the_default_domain_b_parameters():
    from medgen.commands import phantoms as command

    numbers = [float(v) for v in re.findall(r"(\d+(?:\.\d+)?) (?:mm FWHM|mm thick|HU,)", command._DOMAIN_HELP)]
    assert numbers == [B.kernel_fwhm_mm, B.slice_thickness_mm, B.noise_hu]
    assert f"{B.hu_gain:g}*HU + {B.hu_offset:g}" in command._DOMAIN_HELP
    assert B.hu_gain * -1000.0 + B.hu_offset == pytest.approx(-1000.0)  # "air unchanged"


def test_the_light_copies_agree_with_the_domains_module():
    from medgen.data.phantoms import KINDS, phantom_set, volume_specs

    assert phantom_set.DOMAIN_NAMES == domains.DOMAIN_CHOICES
    assert phantom_set.DOMAIN_B_VOLUME == domains.DOMAIN_B_VOLUME
    assert phantom_set.B_EXTRA_VOLUME == domains.B_EXTRA_VOLUME
    for kind in KINDS:
        for domain in domains.DOMAIN_CHOICES:
            assert phantom_set.volume_names(kind, domain) == tuple(volume_specs(kind, domain))
