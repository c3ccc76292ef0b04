"""Distribution metrics checked against closed forms and explicit (loop) reference computations."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.linalg

from medgen.metrics.fid import fid, frechet_distance
from medgen.metrics.inception_score import inception_score
from medgen.metrics.kid import kid
from medgen.metrics.mmd import median_heuristic, mmd2_gaussian
from medgen.metrics.prdc import expected_coverage, membership, prdc
from medgen.metrics.uncertainty import bootstrap, splits


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Independent reference: the textbook formula with scipy.linalg.sqrtm of S_a S_b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    m = rng.normal(size=(d, d))
    return m @ m.T + 0.1 * np.eye(d)


# ---------------------------------------------------------------- FID

def test_frechet_distance_closed_form_diagonal_gaussians():
    # For commuting (diagonal) covariances: ||mu1-mu2||² + Σ (sqrt(a_i) - sqrt(b_i))².
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_general_covariances():
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_on_samples_matches_scipy_reference():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(loc=0.3, size=(50, 8)) @ rng.normal(size=(8, 8))
    ref = _scipy_fid(a, b)
    assert fid(a, b) == pytest.approx(ref, rel=1e-6)


def test_fid_with_fewer_samples_than_dimensions_matches_both_references():
    # Rank-deficient covariances (N < d): the sample-space path must agree with the
    # covariance-space path and with scipy's sqrtm. (Both of those take square roots of
    # zero eigenvalues, which turns 1e-16 rounding into ~1e-8 relative error, hence 1e-6.)
    rng = np.random.default_rng(12)
    a = rng.normal(size=(9, 40)) * rng.uniform(0.5, 2.0, 40)
    b = rng.normal(loc=0.2, size=(7, 40))
    mu_a, s_a = a.mean(0), np.cov(a, rowvar=False)
    mu_b, s_b = b.mean(0), np.cov(b, rowvar=False)
    value = fid(a, b)
    assert value == pytest.approx(frechet_distance(mu_a, s_a, mu_b, s_b), rel=1e-6)
    assert value == pytest.approx(_scipy_fid(a, b), rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_large_gaussian_samples_approaches_population_value():
    rng = np.random.default_rng(3)
    s1, s2 = _random_spd(rng, 3), _random_spd(rng, 3)
    mu1, mu2 = np.zeros(3), np.array([1.0, -1.0, 0.5])
    a = rng.multivariate_normal(mu1, s1, size=40000)
    b = rng.multivariate_normal(mu2, s2, size=40000)
    assert fid(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=0.03)


# ---------------------------------------------------------------- KID / MMD

def _loop_unbiased_mmd2(x, y, kernel) -> float:
    n, m = len(x), len(y)
    kxx = sum(kernel(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(kernel(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_kid_equals_explicit_polynomial_kernel_sums():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 3)), rng.normal(loc=0.5, size=(10, 3))
    d = x.shape[1]
    ref = _loop_unbiased_mmd2(x, y, lambda u, v: (float(u @ v) / d + 1.0) ** 3)
    # Subsets of size min(1000, 10, 10) = 10 are permutations of the whole sets, and the
    # unbiased estimate is permutation invariant: every subset gives the loop value.
    mean, std = kid(x, y, subsets=5, subset_size=1000)
    assert mean == pytest.approx(ref, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    # Explicit kernel parameters are honoured.
    ref2 = _loop_unbiased_mmd2(x, y, lambda u, v: (0.3 * float(u @ v) + 2.0) ** 2)
    assert kid(x, y, subsets=2, degree=2, gamma=0.3, coef0=2.0)[0] == pytest.approx(ref2, rel=1e-10)


def test_kid_subsets_of_unequal_sets_average_to_full_estimate():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.normal(loc=1.0, size=(12, 2))
    full = _loop_unbiased_mmd2(x, y, lambda u, v: (float(u @ v) / 2 + 1.0) ** 3)
    mean, std = kid(x, y, subsets=400, subset_size=12, seed=1)
    assert std > 0  # subsets of x differ
    assert mean == pytest.approx(full, rel=0.05)  # subset averages are unbiased for the same quantity


def test_mmd_median_heuristic_and_gaussian_kernel_match_loops():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 4)), rng.normal(loc=0.4, size=(6, 4))
    pooled = np.concatenate([x, y])
    dists = [math.dist(p, q) for p in pooled for q in pooled]  # full matrix, diagonal included
    ell = statistics.median_low(dists)
    assert median_heuristic(x, y) == pytest.approx(ell, rel=1e-12)

    def k(u, v):
        return math.exp(-math.dist(u, v) ** 2 / ell**2)

    assert mmd2_gaussian(x, y) == pytest.approx(_loop_unbiased_mmd2(x, y, k), rel=1e-10)
    biased = (
        sum(k(u, v) for u in x for v in x) / 49 + sum(k(u, v) for u in y for v in y) / 36 - 2 * sum(k(u, v) for u in x for v in y) / 42
    )
    assert mmd2_gaussian(x, y, unbiased=False) == pytest.approx(biased, rel=1e-10)
    assert mmd2_gaussian(x, y, bandwidth=3.0) == pytest.approx(
        _loop_unbiased_mmd2(x, y, lambda u, v: math.exp(-math.dist(u, v) ** 2 / 9.0)), rel=1e-10
    )


def test_mmd_grows_with_mean_shift_and_is_near_zero_for_same_distribution():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(80, 5))
    same = rng.normal(size=(80, 5))
    values = [mmd2_gaussian(base, rng.normal(loc=s, size=(80, 5)), bandwidth=3.0) for s in (0.5, 1.0, 2.0)]
    assert values[0] < values[1] < values[2]
    assert abs(mmd2_gaussian(base, same, bandwidth=3.0)) < values[0] / 3


# ---------------------------------------------------------------- PRDC

def _loop_prdc(real, fake, k):
    def radius(points, i):
        return sorted(math.dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    rr = [radius(real, i) for i in range(len(real))]
    rf = [radius(fake, j) for j in range(len(fake))]
    d = [[math.dist(r, f) for f in fake] for r in real]
    n, m = len(real), len(fake)
    precision = sum(any(d[i][j] < rr[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(d[i][j] < rf[j] for j in range(m)) for i in range(n)) / n
    density = sum(sum(d[i][j] < rr[i] for i in range(n)) for j in range(m)) / (k * m)
    coverage = sum(min(d[i]) < rr[i] for i in range(n)) / n
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


def test_prdc_matches_loop_definition():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(25, 3)), rng.normal(loc=0.7, scale=1.3, size=(20, 3))
    got, ref = prdc(real, fake, k=3), _loop_prdc(real, fake, 3)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_membership_marks_the_samples_each_share_counts():
    # The per-sample arrays against the loop definition, sample by sample, and the shares they give.
    rng = np.random.default_rng(12)
    real, fake, k = rng.normal(size=(18, 3)), rng.normal(loc=0.5, size=(15, 3)), 3

    def radius(points, i):
        return sorted(math.dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    rr = [radius(real, i) for i in range(len(real))]
    rf = [radius(fake, j) for j in range(len(fake))]
    d = [[math.dist(r, f) for f in fake] for r in real]
    m = membership(real, fake, k)
    assert m["recalled"].tolist() == [any(d[i][j] < rf[j] for j in range(len(fake))) for i in range(len(real))]
    assert m["covered"].tolist() == [min(d[i]) < rr[i] for i in range(len(real))]
    assert m["precise"].tolist() == [any(d[i][j] < rr[i] for i in range(len(real))) for j in range(len(fake))]
    assert m["real_balls_per_fake"].tolist() == [sum(d[i][j] < rr[i] for i in range(len(real))) for j in range(len(fake))]
    assert 0 < m["recalled"].sum() < len(real) and 0 < m["covered"].sum() < len(real)  # both kinds occur
    assert prdc(real, fake, k) == pytest.approx(_loop_prdc(real, fake, k), abs=1e-12)


def test_membership_finds_the_real_mode_a_generator_drops():
    rng = np.random.default_rng(10)
    real = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 50.0])
    m = membership(real, real[:30].copy(), k=4)  # the generator reproduces mode A only
    assert m["recalled"].tolist() == [True] * 30 + [False] * 30
    assert m["covered"].tolist() == [True] * 30 + [False] * 30


def test_prdc_identical_sets_and_far_away_fakes():
    rng = np.random.default_rng(9)
    # A large common offset (as network features have) must not break the exact ties of a
    # set compared with its own copy: density is exactly 1 only if they resolve consistently.
    real = rng.normal(size=(40, 4)) + 1e4
    same = prdc(real, real.copy(), k=5)
    assert same == pytest.approx({"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})
    far = prdc(real, real + 100.0, k=5)
    assert far == pytest.approx({"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0})


def test_prdc_fakes_covering_one_of_two_clusters():
    rng = np.random.default_rng(10)
    cluster_a = rng.normal(size=(30, 2))
    cluster_b = rng.normal(size=(30, 2)) + 50.0
    real = np.concatenate([cluster_a, cluster_b])
    got = prdc(real, cluster_a.copy(), k=4)  # the generator reproduces mode A only
    assert got == pytest.approx({"precision": 1.0, "recall": 0.5, "density": 1.0, "coverage": 0.5})


@pytest.mark.parametrize(("n_real", "n_fake", "k"), [(40, 20, 3), (8, 4, 3), (20, 40, 2)])
def test_expected_coverage_matches_sampling_from_one_distribution(n_real, n_fake, k):
    # Independent reference: real and fake drawn from the same Gaussian many times; the mean coverage of
    # prdc() against the closed form. 1500 draws put the standard error at about 0.004 or less.
    rng = np.random.default_rng(3)
    draws = [prdc(rng.normal(size=(n_real, 6)), rng.normal(size=(n_fake, 6)), k=k)["coverage"] for _ in range(1500)]
    assert np.mean(draws) == pytest.approx(expected_coverage(n_real, n_fake, k), abs=0.015)


def test_expected_coverage_closed_form():
    # Equal sizes tend to 1 - 2^-k (Naeem et al. 2020); fewer fake than real samples lower it.
    assert expected_coverage(10_000, 10_000, 5) == pytest.approx(1 - 0.5 ** 5, abs=1e-3)
    assert expected_coverage(128, 128, 5) == pytest.approx(0.9706, abs=1e-4)
    assert expected_coverage(128, 64, 5) == pytest.approx(0.8735, abs=1e-4)
    # k = 5 of 5 other real samples: the ball reaches the farthest of them, so the one fake covers unless it is
    # the farthest of the six others
    assert expected_coverage(6, 1, 5) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="more than k=5 real samples"):
        expected_coverage(5, 10, 5)


# ---------------------------------------------------------------- IS

def test_inception_score_known_tables():
    uniform = np.full((40, 4), 0.25)
    assert inception_score(uniform, splits=4) == pytest.approx((1.0, 0.0), abs=1e-9)
    confident = np.eye(5)[np.arange(50) % 5]  # one-hot, balanced over 5 classes in every split
    assert inception_score(confident, splits=5) == pytest.approx((5.0, 0.0), abs=1e-6)
    # Confident but always the same class: no diversity -> 1.
    collapsed = np.tile([0.0, 1.0, 0.0], (30, 1))
    assert inception_score(collapsed, splits=3)[0] == pytest.approx(1.0, abs=1e-6)
    # Two classes, p(y|x) = (0.9, 0.1) or (0.1, 0.9) half each: IS = exp(KL((.9,.1)||(.5,.5))).
    soft = np.array([[0.9, 0.1], [0.1, 0.9]] * 10)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert inception_score(soft, splits=1)[0] == pytest.approx(math.exp(kl), rel=1e-9)


def test_inception_score_rejects_non_probabilities():
    with pytest.raises(ValueError):
        inception_score(np.ones((4, 3)))


# ---------------------------------------------------------------- uncertainty

def test_bootstrap_std_of_mean_matches_standard_error():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=400), np.zeros(5)
    mean, std = bootstrap(lambda x, y: float(x.mean() - y.mean()), a, b, n=400, seed=0)
    assert std == pytest.approx(a.std() / math.sqrt(len(a)), rel=0.15)
    assert mean == pytest.approx(a.mean(), abs=3 * a.std() / math.sqrt(len(a)))


def test_splits_partition_the_generated_set():
    a, b = np.zeros(3), np.arange(23, dtype=float)
    mean, std = splits(lambda x, y: float(len(y)), a, b, n_splits=5)
    assert (mean, std) == pytest.approx((23 / 5, float(np.std([5, 5, 5, 4, 4]))))
    # The parts are disjoint and cover b: their sums add up to the total.
    total_mean, _ = splits(lambda x, y: float(y.sum()), a, b, n_splits=5)
    assert total_mean * 5 == pytest.approx(b.sum())
