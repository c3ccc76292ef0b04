"""Data items made of named volumes: add_volume, VolumeDataset(keys=...), include/keep and aligned transforms."""

from __future__ import annotations

import csv
import doctest
import itertools
import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import medgen.data.dataset as dataset_module
import medgen.data.transforms as transforms_module
from medgen.core.errors import InputError, UsageError
from medgen.data.dataset import DEFAULT_VOLUMES, VolumeDataset, add_volume
from medgen.data.io import write_nifti
from medgen.data.preprocess import PreprocessSettings, preprocess_folder
from medgen.data.transforms import Compose, OnKeys, RandomFlip

SIZE = 16
IDS = [f"case{n:02d}" for n in range(6)]


def _manifest(root):
    with open(root / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def single(tmp_path):
    """A single-image data set as `medgen preprocess` wrote them before named volumes (no 'volumes' entry)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "volumes").mkdir(parents=True)
    lines = ["id,source,orig_shape,orig_spacing,spacing,file,label,age"]
    for n, item in enumerate(IDS):
        arr = np.clip(rng.normal(0.0, 0.5, size=(SIZE,) * 3), -1, 1).astype(np.float16)
        np.save(root / "volumes" / f"{item}.npy", arr)
        lines.append(f"{item},/data/{item}.nii.gz,32x32x32,1x1x1,2x2x2,volumes/{item}.npy,{n % 2},{40 + n}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "preprocess.json").write_text(json.dumps({"modality": "ct", "size": SIZE}))
    return root


@pytest.fixture
def paired(single):
    """The same data set with a ``target`` (intensity) and a ``mask`` (label map) per subject."""
    rng = np.random.default_rng(1)
    written = {}
    for item in IDS:
        target = rng.uniform(-1, 1, size=(SIZE,) * 3).astype(np.float16)
        mask = rng.integers(0, 4, size=(SIZE,) * 3)
        assert add_volume(single, "target", item, target) == single / "targets" / f"{item}.npy"
        add_volume(single, "mask", item, mask, kind="label")
        written[item] = {"target": target, "mask": mask}
    return single, written


def _image(root, item):
    return np.load(root / "volumes" / f"{item}.npy").astype(np.float32)


# --------------------------------------------------------------------------- single-image data sets


def test_single_image_data_set_yields_the_same_items_as_before(single):
    ds = VolumeDataset(single, split="all", covariate_columns=["age"])
    assert ds.keys == ["image"] and ds.volumes == {"image": "intensity"}
    assert ds.files["image"] == [single / "volumes" / f"{i}.npy" for i in IDS]
    for index, item_id in enumerate(IDS):
        item = ds[index]
        assert list(item) == ["image", "label", "covariates", "id", "index"]
        assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (1, SIZE, SIZE, SIZE)
        np.testing.assert_array_equal(item["image"][0].numpy(), _image(single, item_id))
        assert item["id"] == item_id and item["index"] == index
        assert item["label"].item() == index % 2 and item["covariates"].tolist() == [40 + index]
    explicit = VolumeDataset(single, split="all", covariate_columns=["age"], keys=["image"])
    for a, b in zip(ds, explicit):
        assert torch.equal(a["image"], b["image"]) and a.keys() == b.keys()


def test_many_volumes_do_not_hold_a_file_handle_each(single):
    ds = VolumeDataset(single, split="all")
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(20):
        for i in range(len(ds)):
            ds[i]
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before + 2


# --------------------------------------------------------------------------- add_volume and paired items


def test_add_volume_records_the_volume_in_manifest_and_info(paired):
    root, _ = paired
    rows = _manifest(root)
    assert list(rows[0]) == ["id", "source", "orig_shape", "orig_spacing", "spacing", "file", "label", "age",
                             "target", "mask"]
    assert [(r["target"], r["mask"]) for r in rows] == [(f"targets/{i}.npy", f"masks/{i}.npy") for i in IDS]
    assert rows[2]["label"] == "0" and rows[3]["age"] == "43"  # other columns untouched
    info = json.loads((root / "preprocess.json").read_text())
    assert info["modality"] == "ct" and info["size"] == SIZE
    assert info["volumes"] == {**DEFAULT_VOLUMES, "target": {"kind": "intensity", "dtype": "float16"},
                               "mask": {"kind": "label", "dtype": "int16"}}
    assert np.load(root / "masks" / "case00.npy").dtype == np.int16
    leftovers = [p for d in ("targets", "masks", ".") for p in (root / d).iterdir() if p.name.startswith(".")
                 and p.name != ".volumes.lock"]
    assert not leftovers  # no temporary files


def test_paired_items_are_aligned_and_bit_exact(paired):
    root, written = paired
    ds = VolumeDataset(root, split="all")
    assert ds.keys == ["image", "target", "mask"]
    assert ds.volumes == {"image": "intensity", "target": "intensity", "mask": "label"}
    for index, item_id in enumerate(IDS):
        item = ds[index]
        assert list(item)[:3] == ["image", "target", "mask"] and item["id"] == item_id
        assert item["target"].dtype == torch.float32 and item["mask"].dtype == torch.int64
        assert {tuple(item[k].shape) for k in ds.keys} == {(1, SIZE, SIZE, SIZE)}
        np.testing.assert_array_equal(item["image"][0].numpy(), _image(root, item_id))
        np.testing.assert_array_equal(item["target"][0].numpy(), written[item_id]["target"].astype(np.float32))
        np.testing.assert_array_equal(item["mask"][0].numpy(), written[item_id]["mask"])

    only = VolumeDataset(root, split="all", keys=("mask", "image"))
    assert list(only[0])[:2] == ["mask", "image"] and "target" not in only[0]

    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    for key in ds.keys:
        assert torch.equal(torch.cat([b[key] for b in batches]), torch.stack([ds[i][key] for i in range(len(ds))]))


def test_add_volume_stores_intensity_as_float16_and_replaces(paired):
    root, _ = paired
    clean = np.linspace(-1, 1, SIZE**3, dtype=np.float32).reshape((SIZE,) * 3)
    add_volume(root, "target", "case01", clean)  # replaces the earlier one
    item = VolumeDataset(root, split="all", keys=["target"])[1]
    np.testing.assert_array_equal(item["target"][0].numpy(), clean.astype(np.float16).astype(np.float32))
    assert len(_manifest(root)[0]) == 10  # no second column
    add_volume(root, "mask", "case01", np.ones((SIZE,) * 3, dtype=bool), kind="label")
    assert VolumeDataset(root, ids=["case01"], keys=["mask"])[0]["mask"].sum().item() == SIZE**3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "image"}, UsageError, "volume name 'image'"),
        ({"name": "label"}, UsageError, "volume name 'label'"),
        ({"name": "Target"}, UsageError, "lower-case"),
        ({"name": "volume"}, UsageError, "volume name 'volume'"),
        ({"name": "age"}, UsageError, "column 'age' exists and is not a volume"),
        ({"kind": "mask"}, UsageError, "volume kind 'mask'"),
        ({"id": "nobody"}, InputError, "no subject 'nobody'"),
        ({"array": np.zeros((8, 8, 8))}, UsageError, r"shape \(8, 8, 8\), but its image has \(16, 16, 16\)"),
        ({"array": np.full((SIZE,) * 3, np.nan)}, UsageError, "finite"),
        ({"array": np.full((SIZE,) * 3, 1e6)}, UsageError, "finite"),
        ({"kind": "label", "array": np.full((SIZE,) * 3, 0.5)}, UsageError, "integer classes"),
        ({"name": "mask", "kind": "intensity"}, UsageError, "holds kind 'label'"),
    ],
)
def test_add_volume_refuses_bad_requests(paired, kwargs, error, match):
    root, _ = paired
    manifest, info = (root / "manifest.csv").read_text(), (root / "preprocess.json").read_text()
    args = {"name": "extra", "id": "case00", "array": np.zeros((SIZE,) * 3), "kind": "intensity", **kwargs}
    with pytest.raises(error, match=match):
        add_volume(root, args["name"], args["id"], args["array"], kind=args["kind"])
    assert (root / "manifest.csv").read_text() == manifest and (root / "preprocess.json").read_text() == info


def test_an_interrupted_add_volume_leaves_a_readable_data_set_and_can_be_repeated(single, monkeypatch):
    def crash(path, obj, indent=2):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_module, "atomic_write_json", crash)
    clean = np.full((SIZE,) * 3, 0.25, dtype=np.float16)
    with pytest.raises(KeyboardInterrupt):
        add_volume(single, "target", "case00", clean)
    assert "target" in _manifest(single)[0]  # the manifest was written, preprocess.json not
    ds = VolumeDataset(single, split="all")
    assert ds.keys == ["image"] and list(ds[0])[0] == "image" and "target" not in ds[0]
    monkeypatch.undo()
    add_volume(single, "target", "case00", clean)
    np.testing.assert_array_equal(VolumeDataset(single, ids=["case00"])[0]["target"][0].numpy(), 0.25)


# --------------------------------------------------------------------------- errors


def test_missing_volume_file_is_named(paired):
    root, _ = paired
    (root / "targets" / "case03.npy").unlink()
    with pytest.raises(InputError) as info:
        VolumeDataset(root, split="all")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(root / "targets" / "case03.npy")) and "missing" in message and "'target'" in message
    assert len(VolumeDataset(root, split="all", keys=["image", "mask"])) == len(IDS)  # other volumes still usable
    expected = r"preprocess.json: no volume 'follow_up' in this data set \(volumes: image, target, mask\)"
    with pytest.raises(InputError, match=expected):
        VolumeDataset(root, split="all", keys=["image", "follow_up"])
    with pytest.raises(UsageError, match="each at most once"):
        VolumeDataset(root, split="all", keys=["image", "image"])


def test_empty_cell_is_named(paired):
    root, _ = paired
    text = (root / "manifest.csv").read_text().replace("targets/case04.npy", "")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(InputError, match=r"manifest.csv: subject 'case04' has no 'target' volume \(empty cell"):
        VolumeDataset(root, split="all")


@pytest.mark.parametrize("size_recorded", [True, False])
def test_volumes_of_different_shape_are_named(paired, size_recorded):
    root, _ = paired
    if not size_recorded:
        info = json.loads((root / "preprocess.json").read_text())
        del info["size"]
        (root / "preprocess.json").write_text(json.dumps(info))
    bad = root / "masks" / "case02.npy"
    np.save(bad, np.zeros((SIZE, SIZE, SIZE // 2), np.int16))
    ds = VolumeDataset(root, split="all")
    ds[1]  # other subjects are fine
    with pytest.raises(InputError) as info:
        ds[2]
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{bad}: shape (16, 16, 8) differs from ")
    assert str(root / "volumes" / "case02.npy") in message


# --------------------------------------------------------------------------- transforms


def test_include_keep_degrades_only_the_included_volume(paired):
    root, written = paired
    degrade = OnKeys(lambda v: v + 0.25, include=["image"], keep={"image": "clean"})
    ds = VolumeDataset(root, split="all", transform=degrade)
    for index, item_id in enumerate(IDS):
        item = ds[index]
        image = _image(root, item_id)
        np.testing.assert_array_equal(item["clean"][0].numpy(), image)  # the kept copy is the original
        np.testing.assert_array_equal(item["image"][0].numpy(), image + np.float32(0.25))
        np.testing.assert_array_equal(item["target"][0].numpy(), written[item_id]["target"].astype(np.float32))
        np.testing.assert_array_equal(item["mask"][0].numpy(), written[item_id]["mask"])

    # The usual pairing: a single-image data set, degraded input under `image`, clean copy as `target`.
    single = VolumeDataset(root, split="all", keys=["image"],
                           transform=OnKeys(lambda v: v + 0.25, include=["image"], keep={"image": "target"}))
    item = single[0]
    np.testing.assert_array_equal(item["target"][0].numpy(), _image(root, IDS[0]))
    np.testing.assert_array_equal((item["image"] - item["target"]).unique().numpy(), [0.25])

    with pytest.raises(UsageError, match="already has 'target'"):
        VolumeDataset(root, split="all", transform=OnKeys(lambda v: v, include=["image"], keep={"image": "target"}))[0]
    with pytest.raises(UsageError, match="no volume 'follow_up'"):
        OnKeys(lambda v: v, include=["follow_up"])(ds[0])


def test_random_flips_are_identical_for_all_volumes(paired):
    root, _ = paired
    plain = VolumeDataset(root, split="all")
    flip = RandomFlip(axes=(0, 1, 2), p=0.5, generator=torch.Generator().manual_seed(3))
    ds = VolumeDataset(root, split="all", transform=flip)
    subsets = [dims for r in range(4) for dims in itertools.combinations((1, 2, 3), r)]
    seen = set()
    for _ in range(3):
        for index in range(len(ds)):
            original, out = plain[index], ds[index]
            matches = {k: [d for d in subsets if torch.equal(out[k], original[k].flip(list(d)) if d else original[k])]
                       for k in plain.keys}
            assert len(matches["image"]) == 1  # random data: exactly one flip explains it
            assert matches["target"] == matches["image"] and matches["image"][0] in matches["mask"]
            seen.add(matches["image"][0])
            assert out["label"] is not None and out["id"] == original["id"]
    assert len(seen) > 3  # the draws vary between items

    # Composed: degrade then flip; the pair stays aligned (input - target is the constant everywhere).
    pair = Compose([OnKeys(lambda v: v + 0.25, include=["image"], keep={"image": "clean"}),
                    RandomFlip(axes=(0,), p=1.0)])
    item = VolumeDataset(root, split="all", keys=["image"], transform=pair)[0]
    assert torch.equal(item["clean"], plain[0]["image"].flip(1))
    assert torch.equal(item["image"], (plain[0]["image"] + 0.25).flip(1))
    with pytest.raises(UsageError, match="axes"):
        RandomFlip(axes=(3,))


def test_transforms_docstring_example_runs():
    result = doctest.testmod(transforms_module)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- preprocess reruns


def test_preprocess_rerun_keeps_added_volumes_of_unchanged_subjects(tmp_path, make_ct):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        write_nifti(src / f"good{i}.nii.gz", make_ct((20, 20, 12), seed=i), np.diag([1.5, 1.5, 2.0, 1.0]))
    settings = PreprocessSettings("ct", SIZE)
    logs = []
    preprocess_folder(src, out, settings, progress=False, log=logs.append)
    assert json.loads((out / "preprocess.json").read_text())["volumes"] == DEFAULT_VOLUMES
    for i in range(2):
        add_volume(out, "target", f"good{i}", np.load(out / "volumes" / f"good{i}.npy"))
    before = (out / "manifest.csv").read_text()

    summary = preprocess_folder(src, out, settings, progress=False, log=logs.append)
    assert summary.skipped == ["good0", "good1"]
    assert (out / "manifest.csv").read_text() == before
    assert set(json.loads((out / "preprocess.json").read_text())["volumes"]) == {"image", "target"}

    # good1's source changes: preprocessed again, so its target (made from the old image) is dropped.
    write_nifti(src / "good1.nii.gz", make_ct((20, 20, 12), seed=7), np.diag([1.5, 1.5, 2.0, 1.0]))
    summary = preprocess_folder(src, out, settings, progress=False, log=logs.append)
    assert summary.written == ["good1"]
    rows = _manifest(out)
    assert [r["target"] for r in rows] == ["targets/good0.npy", ""]
    assert any("have no target volume (e.g. good1)" in line for line in logs)
    with pytest.raises(InputError, match="subject 'good1' has no 'target' volume"):
        VolumeDataset(out, split="all")
    assert len(VolumeDataset(out, split="all", keys=["image"])) == 2
    add_volume(out, "target", "good1", np.load(out / "volumes" / "good1.npy"))
    item = VolumeDataset(out, ids=["good1"])[0]
    assert torch.equal(item["image"], item["target"])
