"""On-disk cache of feature arrays, keyed by a hash of everything that produced them.

Like StyleGAN2-ADA's dataset statistics cache: the features of a folder are stored as
``<folder>/.medgen-cache/features-<key>.npy`` (or under ``cache_dir``) with a JSON sidecar
saying what they are. The key is the SHA-256 of

* the volume files (path relative to the folder, size in bytes, modification time in ns),
* how their intensities are read (folder kind, modality, CT window, preprocessing record),
* the extractor (name, weight-file SHA-256 or random seed, input size, intensity and axis
  conventions) and the medgen version,

so editing, adding or removing a volume, or changing any setting, computes anew. When the
folder is not writable the cache goes to ``$XDG_CACHE_HOME/medgen/features`` (default
``~/.cache/medgen/features``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgen.core.version import __version__
from medgen.core.fileio import atomic_save_npy, atomic_write_json

CACHE_DIRNAME = ".medgen-cache"
FORMAT_VERSION = 1


def feature_cache_key(volume_set, extractor_description: dict[str, Any]) -> str:
    """SHA-256 (hex) of the files, intensity settings and extractor settings."""
    payload = {
        "format": FORMAT_VERSION,
        "medgen": __version__,
        "files": volume_set.fingerprint(),
        "intensity": volume_set.intensity_settings(),
        "target_shape": None,  # features resize each native volume to the extractor's input size
        "extractor": extractor_description,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medgen" / "features"


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_file(volume_set, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the features with ``key`` live (a readable existing file wins over a writable place)."""
    name = f"features-{key[:32]}.npy"
    candidates = [Path(cache_dir)] if cache_dir is not None else [Path(volume_set.root) / CACHE_DIRNAME, user_cache_dir()]
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    for folder in candidates:
        if _writable_dir(folder):
            return folder / name
    return candidates[-1] / name


def cached_features(
    volume_set,
    extractor_description: dict[str, Any],
    compute: Callable[[], np.ndarray],
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``volume_set`` from the cache, or ``compute()`` them and store them.

    Returns ``(features [N, d] float64, info)`` with ``info = {"cache_file", "from_cache"}``.
    A corrupt or mismatched cache file is recomputed and overwritten; a cache that cannot
    be written is skipped silently (the features are still returned). Sets whose
    ``cacheable`` is False (volumes in memory) are never cached.
    """
    if not use_cache or not getattr(volume_set, "cacheable", True):
        return np.asarray(compute(), dtype=np.float64), {"cache_file": None, "from_cache": False}
    key = feature_cache_key(volume_set, extractor_description)
    path = cache_file(volume_set, key, cache_dir)
    if path.is_file():
        try:
            feats = np.load(path)
            if feats.ndim == 2 and feats.shape[0] == len(volume_set):
                return feats.astype(np.float64), {"cache_file": str(path), "from_cache": True}
        except (OSError, ValueError):
            pass
    feats = np.asarray(compute(), dtype=np.float64)
    try:
        atomic_save_npy(path, feats)
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "key": key,
                "folder": str(volume_set.root),
                "n": len(volume_set),
                "ids": list(volume_set.ids),
                "extractor": extractor_description,
                "intensity": volume_set.intensity_settings(),
                "medgen_version": __version__,
            },
        )
        stored: str | None = str(path)
    except OSError:
        stored = None
    return feats, {"cache_file": stored, "from_cache": False}
