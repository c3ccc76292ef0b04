"""VolumeDataset and the deterministic split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medgen.data.dataset import VolumeDataset, load_manifest, split_ids
from medgen.core.errors import InputError, UsageError

SIZE = 16


@pytest.fixture
def dataset_root(tmp_path):
    """A preprocessed folder written by hand: 10 volumes, labels, one covariate with a gap."""
    rng = np.random.default_rng(0)
    (tmp_path / "volumes").mkdir()
    lines = ["id,source,orig_shape,orig_spacing,spacing,file,label,age,group"]
    arrays = {}
    for n in range(10):
        item = f"case{n:02d}"
        arr = np.clip(rng.normal(0.0, 0.5, size=(SIZE,) * 3), -1, 1).astype(np.float16)
        np.save(tmp_path / "volumes" / f"{item}.npy", arr)
        arrays[item] = arr
        age = "" if n == 3 else f"{50 + n}.5"
        lines.append(f"{item},/data/{item}.nii.gz,32x32x32,1x1x1,2x2x2,volumes/{item}.npy,{n % 3},{age},"
                     f"{'copd' if n % 2 else 'control'}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "preprocess.json").write_text(json.dumps({"modality": "ct", "size": SIZE}))
    return tmp_path, arrays


def test_split_is_deterministic_disjoint_and_covering():
    ids = [f"p{i:03d}" for i in range(57)]
    split = split_ids(ids, seed=7)
    assert split == split_ids(list(reversed(ids)), seed=7)  # depends on the set of ids, not their order
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert sum(len(s) for s in sets) == 57 and set.union(*sets) == set(ids)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert (len(split["val"]), len(split["test"])) == (round(5.7), round(5.7))
    assert split_ids(ids, seed=8) != split
    # Independent reconstruction: PCG64(seed) permutation of the sorted ids; val first, then test.
    perm = np.random.Generator(np.random.PCG64(7)).permutation(57)
    assert split["val"] == sorted(ids[i] for i in perm[:6])
    assert split["test"] == sorted(ids[i] for i in perm[6:12])
    with pytest.raises(UsageError):
        split_ids(ids, fractions=(0.5, 0.2, 0.2))


def test_items_match_the_stored_arrays(dataset_root):
    root, arrays = dataset_root
    ds = VolumeDataset(root, split="all", covariate_columns=["age"])
    assert len(ds) == 10 and ds.num_classes == 3
    for index in (0, 3, 9):
        item = ds[index]
        assert item["id"] == f"case{index:02d}" and item["index"] == index
        image = item["image"]
        assert image.dtype == torch.float32 and tuple(image.shape) == (1, SIZE, SIZE, SIZE)
        np.testing.assert_array_equal(image[0].numpy(), arrays[item["id"]].astype(np.float32))
        assert -1.0 <= image.min() and image.max() <= 1.0
        assert item["label"].dtype == torch.long and item["label"].item() == index % 3
    assert ds[0]["covariates"].tolist() == [50.5]
    assert torch.isnan(ds[3]["covariates"]).all()  # empty cell


def test_splits_partition_the_manifest(dataset_root):
    root, _ = dataset_root
    parts = {s: VolumeDataset(root, split=s, seed=1) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    expected = split_ids([r["id"] for r in load_manifest(root)], seed=1)
    assert {s: parts[s].ids for s in parts} == expected
    stored = VolumeDataset(root, ids=expected["val"])
    assert stored.ids == expected["val"]


def test_class_names_and_missing_label(dataset_root):
    root, _ = dataset_root
    ds = VolumeDataset(root, split="all", label_column="group")
    assert ds.classes == ["control", "copd"]
    assert [ds[i]["label"].item() for i in range(4)] == [0, 1, 0, 1]
    assert VolumeDataset(root, split="all", label_column=None)[0]["label"].item() == -1
    with pytest.raises(InputError, match="weight"):
        VolumeDataset(root, covariate_columns=["weight"])


def test_dataloader_with_workers_matches_direct_indexing(dataset_root):
    root, _ = dataset_root
    ds = VolumeDataset(root, split="train", seed=0, covariate_columns=["age"])
    ds[0]  # open a memory map in the parent first: workers must not depend on it
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=2)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    assert tuple(images.shape) == (len(ds), 1, SIZE, SIZE, SIZE)
    direct = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert torch.equal(images, direct)
    assert [i for b in batches for i in b["id"]] == ds.ids
    labels = torch.cat([b["label"] for b in batches])
    assert labels.tolist() == [ds[i]["label"].item() for i in range(len(ds))]


def test_not_a_dataset_and_wrong_shape(tmp_path, dataset_root):
    with pytest.raises(InputError, match="not a preprocessed data set"):
        VolumeDataset(tmp_path / "nothing")
    root, _ = dataset_root
    np.save(root / "volumes" / "case00.npy", np.zeros((8, 8, 8), np.float16))
    ds = VolumeDataset(root, split="all")
    with pytest.raises(InputError, match="shape"):
        ds[0]
