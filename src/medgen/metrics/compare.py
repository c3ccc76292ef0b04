"""Side-by-side comparison of two ``medgen evaluate`` reports (e.g. trained vs untrained generator).

Each compared quantity knows its direction: distances (FID, KID, MMD, the
anatomy statistics' Wasserstein-1) are better when lower; precision, recall and
coverage when higher; MS-SSIM diversity and the dimensionality (participation
ratio) are better the closer they are to the real volumes' own values.

Example::

    rows = compare_reports(json.load(open("metrics.json")), json.load(open("metrics-untrained.json")))
    [(r["metric"], r["a"], r["b"], r["a_better"]) for r in rows]
"""

from __future__ import annotations

from typing import Any

# (label, metric name, key inside a dict value or None, direction: "lower" | "higher" | "closer_to_real")
COMPARED: tuple[tuple[str, str, str | None, str], ...] = (
    ("FID", "fid", None, "lower"),
    ("KID", "kid", None, "lower"),
    ("MMD", "mmd", None, "lower"),
    ("precision", "prdc", "precision", "higher"),
    ("recall", "prdc", "recall", "higher"),
    ("coverage", "prdc", "coverage", "higher"),
    ("MS-SSIM (closer to real is better)", "ms_ssim", None, "closer_to_real"),
    ("dimensionality (closer to real is better)", "dimensionality", None, "closer_to_real"),
    ("body volume W1 (ml)", "anatomy", "body_volume_ml", "lower"),
    ("lung fraction W1", "anatomy", "lung_fraction", "lower"),
    ("emphysema % W1", "anatomy", "emphysema_pct", "lower"),
    ("bone fraction W1", "anatomy", "bone_fraction", "lower"),
    ("soft-tissue fraction W1", "anatomy", "soft_tissue_fraction", "lower"),
)


def _value(report: dict[str, Any], name: str, key: str | None) -> float | None:
    entry = (report.get("metrics") or {}).get(name) or {}
    value = entry.get("value")
    if key is not None:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, (int, float)) and value == value:  # not NaN
        return float(value)
    return None


#: Where a "closer to real" metric keeps the real set's value: details.real[key].
_REAL_REFERENCE = {"ms_ssim": "mean", "dimensionality": "participation_ratio"}


def _real_reference(report: dict[str, Any], name: str) -> float | None:
    details = ((report.get("metrics") or {}).get(name) or {}).get("details") or {}
    value = (details.get("real") or {}).get(_REAL_REFERENCE[name])
    return float(value) if isinstance(value, (int, float)) else None


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{metric, a, b, direction, a_better}`` for every quantity both reports hold.

    ``a_better`` is True when report ``a`` is strictly better, False when it is
    worse or equal (ties are not wins).
    """
    rows: list[dict[str, Any]] = []
    for label, name, key, direction in COMPARED:
        va, vb = _value(a, name, key), _value(b, name, key)
        if va is None or vb is None:
            # A metric the generator cannot even produce (e.g. no lung found: NaN) counts against it.
            if (va is None) != (vb is None) and name == "anatomy":
                rows.append({"metric": label, "a": va, "b": vb, "direction": direction, "a_better": va is not None})
            continue
        if direction == "lower":
            better = va < vb
        elif direction == "higher":
            better = va > vb
        else:
            ref = _real_reference(a, name) if _real_reference(a, name) is not None else _real_reference(b, name)
            if ref is None:
                continue
            better = abs(va - ref) < abs(vb - ref)
        rows.append({"metric": label, "a": va, "b": vb, "direction": direction, "a_better": bool(better)})
    return rows


def summary_line(rows: list[dict[str, Any]], a_name: str = "trained", b_name: str = "untrained") -> str:
    """One line: how many quantities ``a`` wins, with FID spelled out."""
    wins = sum(r["a_better"] for r in rows)
    fid = next((r for r in rows if r["metric"] == "FID"), None)
    fid_text = f"; FID {fid['a']:.4g} vs {fid['b']:.4g}" if fid else ""
    return f"{a_name} better than {b_name} on {wins} of {len(rows)} quantities{fid_text}"
