"""Two domains of the same subjects: one anatomy, two renderings, for unpaired image
translation (CycleGAN) and domain adaptation, with true counterparts to score against.

Domain A is each kind's own image, exactly as :func:`medgen.data.phantoms.generate` makes
it. Domain B renders the same subject (same seed, same anatomy, same ``tissue`` map and
factors) with the shift a user meets between two sites:

* ``thorax-ct``: a second scanner, :data:`THORAX_B` (a :class:`CtScanner`), applied to the
  subject's noise-free image (:attr:`Phantom.noise_free`, partial volume included):

  - a smoother reconstruction kernel: an extra Gaussian blur in the axial (x, y) plane of
    ``kernel_fwhm_mm`` = 3 mm FWHM;
  - thicker reconstructed slices: each axial slice is the mean over a slab
    ``slice_thickness_mm`` = 5 mm thick along z (of the image linearly interpolated
    between slices), so a slab of several slices on fine grids, a partial one on coarse;
  - HU calibration ``HU_B = hu_gain · HU + hu_offset`` with ``hu_gain`` = 1.04 and
    ``hu_offset`` = +40 HU: +40 HU at water, +41.6 HU at soft tissue (40 HU), +80 HU at
    bone (1000 HU), air (−1000 HU) unchanged;
  - its own noise, ``noise_hu`` = 8 HU standard deviation in the final image (domain A's
    is 12–20 HU for a 325 mm wide body, more for larger ones, less for smaller ones; the
    manifest's ``noise_hu``): white noise through the grid's partial-volume
    blur, the same kernel and the same slab, so it is coarser in-plane and correlated
    along z. It is drawn from its own random stream of the volume's seed
    (:data:`NOISE_STREAM`), independent of domain A's noise;

  then rounded to whole HU and clipped to [−1024, 3071] HU like domain A.
* ``brain-mri``: A is the T1-weighted contrast (the image) and B the T2-weighted contrast
  of the same anatomy, the ``t2`` volume that :mod:`.brain_mri` renders with its own gain
  and noise (:data:`BRAIN_A`, :data:`BRAIN_B`).

Everything is deterministic in (kind, grid, seed, volume index, domain). Subjects are the
same for a given ``--seed`` in every domain, with the same factors and ``label`` (measured
on the A image); disjoint subjects come from other seeds, e.g. train A on seed 0, B on
seed 1, and score translation on held-out pairs (``both``) of seed 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms.noise import smooth_noise
from medgen.data.phantoms.phantom import Phantom

#: What ``medgen phantoms --domain`` accepts: one domain as the image, or A with B alongside.
DOMAIN_CHOICES = ("A", "B", "both")
#: Name of the extra volume holding the B rendering in a ``both`` set.
DOMAIN_B_VOLUME = "domain_b"
#: Spawn key, under the volume's seed, of domain B's noise (the generators use (0,) … (5,)).
NOISE_STREAM = (100, 1)
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class CtScanner:
    """How a scanner reconstructs a subject's noise-free CT image; lengths in mm, values in HU.

    ``kernel_fwhm_mm``: FWHM of the kernel's extra Gaussian blur in the axial (x, y) plane
    (0: none). ``slice_thickness_mm``: slab each axial slice averages along z (0: the
    grid's own slices). ``noise_hu``: standard deviation of the noise in the final image
    (0: none). ``hu_gain``, ``hu_offset``: calibration ``HU' = hu_gain · HU + hu_offset``.
    """

    kernel_fwhm_mm: float
    slice_thickness_mm: float
    noise_hu: float
    hu_gain: float = 1.0
    hu_offset: float = 0.0


@dataclass(frozen=True)
class MriContrast:
    """An MRI contrast of a brain phantom: ``weighting`` ``"T1"`` (the image) or ``"T2"`` (its ``t2`` volume)."""

    weighting: str


THORAX_B = CtScanner(kernel_fwhm_mm=3.0, slice_thickness_mm=5.0, noise_hu=8.0, hu_gain=1.04, hu_offset=40.0)
BRAIN_A = MriContrast("T1")
BRAIN_B = MriContrast("T2")
#: Domain B of each kind (domain A is the generator's own image).
DOMAIN_B = {"thorax-ct": THORAX_B, "brain-mri": BRAIN_B}
#: The extra volume of a kind that already holds its B rendering (left out of B sets: it is their image).
B_EXTRA_VOLUME = {"brain-mri": "t2"}
_SUMMARY = {
    ("thorax-ct", "A"): "the thorax_ct scanner: blur of 0.6 voxel, noise 12-20 HU at 325 mm body width (noise_hu)",
    ("thorax-ct", "B"): "a second scanner: smoother kernel, thicker slices, HU calibration offset, its own noise",
    ("brain-mri", "A"): "T1-weighted contrast",
    ("brain-mri", "B"): "T2-weighted contrast of the same anatomy (the t2 volume)",
}


def render(phantom: Phantom, domain: str, seed: int) -> np.ndarray:
    """The image of ``phantom``'s subject in ``domain`` ("A" or "B"), float32 in the kind's units.

    ``seed`` is the seed ``phantom`` was generated with (B's noise is drawn from it).
    A is ``phantom.array`` itself; B is :data:`DOMAIN_B` of the kind.
    """
    if domain == "A":
        return phantom.array
    if domain != "B":
        raise ValueError(f"unknown domain {domain!r}; choose A or B")
    params = DOMAIN_B[phantom.kind]
    if isinstance(params, MriContrast):
        return contrast(phantom, params)
    return scan_ct(phantom, params, seed)


def contrast(phantom: Phantom, weighting: MriContrast) -> np.ndarray:
    """The brain phantom's image in ``weighting``: T1 is the image, T2 its ``t2`` volume."""
    if weighting.weighting == "T1":
        return phantom.array
    if weighting.weighting == "T2":
        return phantom.volumes["t2"]
    raise ValueError(f"unknown MRI weighting {weighting.weighting!r}; choose T1 or T2")


def scan_ct(phantom: Phantom, scanner: CtScanner, seed: int, stream: tuple[int, ...] = NOISE_STREAM) -> np.ndarray:
    """``phantom``'s subject as ``scanner`` reconstructs it: HU (float32), rounded and clipped.

    The noise-free image goes through the kernel (x, y) and the slab (z), then the
    calibration; the noise (spawn key ``stream``, default :data:`NOISE_STREAM`, of ``seed``)
    is added last.
    """
    from medgen.data.phantoms.thorax_ct import HU_MAX, HU_MIN

    if phantom.noise_free is None:
        raise ValueError(f"a {phantom.kind} phantom has no noise-free image to scan")
    spacing = np.asarray(phantom.spacing, dtype=np.float64)
    image = _reconstruct(phantom.noise_free, spacing, scanner)
    image = scanner.hu_gain * image + scanner.hu_offset
    if scanner.noise_hu > 0:
        image += scanner.noise_hu * _noise(image.shape, spacing, scanner, seed, stream)
    return np.round(np.clip(image, HU_MIN, HU_MAX)).astype(np.float32)


def kernel_sigma_vox(scanner: CtScanner, spacing: np.ndarray) -> np.ndarray:
    """Gaussian sigma of ``scanner``'s kernel in voxels per axis (x, y; none along z)."""
    sigma_mm = scanner.kernel_fwhm_mm / _FWHM_PER_SIGMA
    return np.array([sigma_mm / spacing[0], sigma_mm / spacing[1], 0.0])


def slab_weights(thickness_vox: float) -> np.ndarray:
    """Weights along z of the mean over a slab ``thickness_vox`` voxels thick centred on a slice,
    of the image linearly interpolated between slices (odd length, sum 1; ``[1]`` for no slab)."""
    if thickness_vox <= 0:
        return np.ones(1)
    half = 0.5 * thickness_vox
    reach = int(np.ceil(half))  # the slab widened by the interpolation kernel: |k| < half + 1
    k = np.arange(-reach, reach + 1, dtype=np.float64)
    weights = (_hat_integral(half - k) - _hat_integral(-half - k)) / thickness_vox
    return weights / weights.sum()


def _hat_integral(u: np.ndarray) -> np.ndarray:
    """∫ from −∞ to ``u`` of the linear-interpolation kernel max(0, 1 − |t|)."""
    u = np.clip(u, -1.0, 1.0)
    return np.where(u < 0, 0.5 * (1.0 + u) ** 2, 1.0 - 0.5 * (1.0 - u) ** 2)


def _reconstruct(volume: np.ndarray, spacing: np.ndarray, scanner: CtScanner, mode: str = "nearest") -> np.ndarray:
    """``volume`` through ``scanner``'s kernel (x, y) and slab (z); float32 (``volume`` itself if neither)."""
    out = np.asarray(volume, dtype=np.float32)
    sigma = kernel_sigma_vox(scanner, spacing)
    if sigma.max() > 0:
        out = ndi.gaussian_filter(out, sigma, truncate=4.0, mode=mode)
    weights = slab_weights(scanner.slice_thickness_mm / spacing[2])
    if len(weights) > 1:
        out = ndi.convolve1d(out, weights.astype(np.float32), axis=2, mode=mode)
    return out


def _noise(
    shape: tuple[int, ...], spacing: np.ndarray, scanner: CtScanner, seed: int, stream: tuple[int, ...] = NOISE_STREAM
) -> np.ndarray:
    """Unit-variance noise as ``scanner`` reconstructs it: the grid's partial-volume blur
    (as in domain A), the kernel and the slab."""
    from medgen.data.phantoms.thorax_ct import BLUR_SIGMA_VOX

    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=stream))
    sigma = np.sqrt(BLUR_SIGMA_VOX**2 + kernel_sigma_vox(scanner, spacing) ** 2)
    noise = smooth_noise(shape, sigma, rng)
    weights = slab_weights(scanner.slice_thickness_mm / spacing[2])
    if len(weights) > 1:
        noise = ndi.convolve1d(noise, weights.astype(np.float32), axis=2, mode="wrap")
    noise -= noise.mean()
    noise /= noise.std() + 1e-12
    return noise


def describe(kind: str) -> dict[str, dict]:
    """The domains of ``kind`` for ``phantoms.json``: ``{"A": {...}, "B": {...}}``, each a summary
    and, where the domain has them, its parameters."""
    a = {"summary": _SUMMARY[(kind, "A")]}
    if kind == "brain-mri":
        a.update(asdict(BRAIN_A))
    b = {"summary": _SUMMARY[(kind, "B")], **asdict(DOMAIN_B[kind])}
    if kind == "thorax-ct":
        b["noise_seed"] = f"numpy.random.SeedSequence(volume_seed(seed, index), spawn_key={NOISE_STREAM})"
    return {"A": a, "B": b}


def manifest_columns(kind: str, domain: str) -> dict[str, str | float]:
    """Per-volume manifest columns of a ``domain`` set ("B" or "both"; none for "A", whose
    manifest is unchanged): ``domain`` (the image's) and B's parameters as ``b_<name>``."""
    if domain == "A":
        return {}
    columns: dict[str, str | float] = {"domain": "B" if domain == "B" else "A"}
    columns.update({f"b_{name}": value for name, value in asdict(DOMAIN_B[kind]).items()})
    return columns
