"""Datasets and pipelines: TFDS (mock data), the built-in digits, folders of users' images."""

import io
import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_vit.training import data


def _image_bytes(fmt, mode="RGB", size=(20, 14), seed=0):
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _make_folder(root, per_class=6, classes=("cat", "dog"), seed=0):
    formats = [
        ("JPEG", "RGB", "jpg"),
        ("PNG", "RGBA", "png"),
        ("BMP", "RGB", "bmp"),
        ("GIF", "L", "gif"),
        ("PNG", "L", "png"),
        ("JPEG", "L", "jpeg"),
    ]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt, mode, ext = formats[i % len(formats)]
            (root / name / f"{i}.{ext}").write_bytes(_image_bytes(fmt, mode, seed=seed + 10 * c + i))
    return root


def test_digits_is_a_tfds_dataset_with_fixed_splits(tmp_path):
    builder = tfds.builder("digits", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 1257,
        "validation": 180,
        "test": 360,
    }
    image, label = next(iter(tfds.load("digits", split="test", data_dir=str(tmp_path), as_supervised=True)))
    assert image.shape == (8, 8, 1) and image.dtype == tf.uint8 and 0 <= int(label) < 10
    splits = data.load("digits", data_dir=str(tmp_path))
    assert splits.labels == [str(i) for i in range(10)] and splits.sizes["train"] == 1257
    image, _ = next(iter(splits.train))
    assert image.shape == (8, 8, 3)  # grey -> RGB for every model
    train_labels = np.array([int(y) for _, y in splits.train])
    assert np.bincount(train_labels).min() > 100  # stratified: every digit well represented


def test_tfds_dataset_by_name_on_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        splits = data.load("cifar10")
        assert len(splits.labels) == 10  # from the dataset's features
        assert splits.sizes["test"] == 12
        batch = next(iter(data.pipeline(splits.train, image_size=32, num_classes=10, batch_size=4, training=True)))
    images, labels = batch
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 10)
    assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=-1), 1.0)


@pytest.mark.parametrize(
    "names, expected",
    [
        ({"train", "test"}, {"train": "train[:90%]", "validation": "train[90%:100%]", "test": "test"}),
        ({"train", "validation", "test"}, {"train": "train", "validation": "validation", "test": "test"}),
        ({"train", "validation"}, {"train": "train[:90%]", "validation": "train[90%:100%]", "test": "validation"}),
        ({"train"}, {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}),
    ],
)
def test_missing_splits_are_held_out_of_train(names, expected):
    assert data.tfds_split_names(names, 10) == expected


def test_varying_image_sizes_are_resized_to_any_shape():
    with tfds.testing.mock_data(num_examples=6):
        splits = data.load("tf_flowers")
        assert len(splits.labels) == 5
        batch = next(iter(data.pipeline(splits.test, image_size=(24, 16), num_classes=5, batch_size=2)))
    assert batch[0].shape == (2, 24, 16, 3)


def test_an_unprepared_tfds_dataset_fails_fast_offline_and_leaves_nothing(tmp_path):
    start = time.perf_counter()  # conftest's guard refuses the connection, as a machine offline does
    with pytest.raises(
        ConnectionError,
        match=r"TFDS dataset 'cifar10' is not prepared in .* cannot be downloaded here \(no connection to "
        r"www.cs.toronto.edu.*download_and_prepare.*or pass --data-dir",
    ):
        data.load("cifar10", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 20  # TFDS itself retries for minutes
    assert os.listdir(tmp_path) == []


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
        data.load("no_such_dataset")


def test_folder_of_images_in_every_format_and_mode(tmp_path):
    root = _make_folder(tmp_path / "pets", per_class=10)
    splits = data.load(str(root), validation_fraction=0.1)
    assert splits.labels == ["cat", "dog"] and splits.name == "pets"
    assert splits.sizes == {"train": 16, "validation": 2, "test": 2}
    for image, label in splits.train:
        assert image.shape[-1] == 3 and image.dtype == tf.uint8 and int(label) in (0, 1)


def test_folder_with_split_subfolders(tmp_path):
    _make_folder(tmp_path / "train")
    _make_folder(tmp_path / "val", per_class=2)
    splits = data.load(str(tmp_path))
    # No test/: one image per class held out of train (not the validation images, which pick the checkpoint).
    assert splits.sizes == {"train": 10, "validation": 4, "test": 2}


@pytest.mark.parametrize(
    "given, expected",
    [
        (("train", "test"), {"train": 10, "validation": 2, "test": 4}),
        (("train", "validation"), {"train": 10, "validation": 4, "test": 2}),
        (("train",), {"train": 8, "validation": 2, "test": 2}),
    ],
)
def test_missing_split_folders_are_held_out_of_train(tmp_path, given, expected):
    for split in given:
        _make_folder(tmp_path / split, per_class=6 if split == "train" else 2, seed=0 if split == "train" else 100)
    splits = data.load(str(tmp_path))
    assert splits.sizes == expected and splits.labels == ["cat", "dog"]
    for split in ("validation", "test"):
        assert sorted(int(y) for _, y in getattr(splits, split)) == [0] * (expected[split] // 2) + [1] * (
            expected[split] // 2
        )
    images = {split: {image.numpy().tobytes() for image, _ in getattr(splits, split)} for split in expected}
    assert not images["train"] & (images["validation"] | images["test"])  # held out, not copied


def test_split_folder_names_are_never_classes(tmp_path):
    _make_folder(tmp_path / "mixed")
    _make_folder(tmp_path / "mixed" / "test", per_class=2)
    with pytest.raises(
        ValueError, match=r"mixed holds split folders \(test\) next to class folders \(cat, dog\).*train/"
    ):
        data.load(str(tmp_path / "mixed"))
    _make_folder(tmp_path / "no_train" / "val", per_class=2)
    _make_folder(tmp_path / "no_train" / "test", per_class=2)
    with pytest.raises(ValueError, match=r"no_train has val, test but no train/"):
        data.load(str(tmp_path / "no_train"))
    _make_folder(tmp_path / "both" / "train")
    _make_folder(tmp_path / "both" / "val", per_class=2)
    _make_folder(tmp_path / "both" / "validation", per_class=2)
    with pytest.raises(ValueError, match=r"both has validation/ and val/"):
        data.load(str(tmp_path / "both"))


def test_broken_files_are_reported_and_skipped_or_refused(tmp_path, capsys):
    root = _make_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "fake.jpg").write_text("this is text, not a JPEG")
    (root / "dog" / "truncated.jpg").write_bytes(_image_bytes("JPEG")[:200])
    splits = data.load(str(root))
    assert sum(splits.sizes.values()) == 12  # the 12 good images, none of the broken ones
    err = capsys.readouterr().err
    for name in ("notes.txt", "empty.png", "fake.jpg", "truncated.jpg"):
        assert name in err
    for split in (splits.train, splits.validation, splits.test):
        assert sum(1 for _ in split) > 0  # iterating never hits a broken file
    with pytest.raises(ValueError, match=r"corrupt, truncated or not images: .*(empty|fake|truncated)"):
        data.load(str(root), bad_files="refuse")


def test_folder_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder at"):
        data.load(str(tmp_path / "missing") + "/")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(_image_bytes("JPEG"))
    with pytest.raises(ValueError, match="has no class sub-folders"):
        data.load(str(tmp_path / "flat"))
    root = _make_folder(tmp_path / "pets")
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"Class folder .*empty_class has no images"):
        data.load(str(root))


def test_a_class_with_no_readable_image_is_a_clear_error(tmp_path, capsys):
    root = _make_folder(tmp_path / "shapes", per_class=6, classes=("circle", "square"))
    (root / "hexagon").mkdir()
    (root / "hexagon" / "a.png").write_bytes(b"")
    (root / "hexagon" / "b.jpg").write_text("text, not a JPEG")
    with pytest.raises(
        ValueError, match=r"Class folder .*hexagon has no readable image to train on.*remove the folder"
    ):
        data.load(str(root))
    _make_folder(tmp_path / "split" / "train", per_class=3, classes=("cat",))
    (tmp_path / "split" / "train" / "dog").mkdir()
    (tmp_path / "split" / "train" / "dog" / "a.png").write_bytes(b"")
    _make_folder(tmp_path / "split" / "val", per_class=2, classes=("cat", "dog"))
    with pytest.raises(ValueError, match=r"Class folder .*train/dog has no readable image"):
        data.load(str(tmp_path / "split"))


def test_small_classes_keep_a_training_image(tmp_path, capsys):
    root = _make_folder(tmp_path / "few", per_class=3, classes=("three",))
    _make_folder(root, per_class=2, classes=("two",))
    _make_folder(root, per_class=1, classes=("one",))
    (root / "three" / "broken.jpg").write_text("not a JPEG")  # held out after decoding: never counted
    (root / "three" / "empty.png").write_bytes(b"")
    splits = data.load(str(root))
    train = sorted(int(y) for _, y in splits.train)
    assert splits.labels == ["one", "three", "two"] and train == [0, 1, 2, 2]  # "three" gave one to each split
    assert [int(y) for _, y in splits.validation] == [1] and [int(y) for _, y in splits.test] == [1]
    # The docs' rule, said where it applies: a class needs 3 images to be validated and tested.
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "too few images" in line)
    assert "2 class(es) have too few images to hold out validation and test images (a class needs 3" in line
    assert line.endswith((f"{os.path.join('few', 'one')}, {os.path.join(root, 'two')}"))


def test_one_class_is_refused(tmp_path):
    _make_folder(tmp_path / "only", per_class=6, classes=("cat",))
    with pytest.raises(ValueError, match=r"only has one class folder \(cat\): a classifier needs at least 2 classes"):
        data.load(str(tmp_path / "only"))


def test_webp_and_tiff_train_as_predict_reads_them(tmp_path):
    from keras_vit.deploy import predict

    assert data.IMAGE_EXTENSIONS is predict.IMAGE_EXTENSIONS  # one list for the whole project
    root = tmp_path / "modern"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i, ext in enumerate(("webp", "tif", "tiff", "png")):
            pixels = np.full((6, 9, 3), 40 * c + 10 * i, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{ext}", lossless=True)
    splits = data.load(str(root))
    assert sum(splits.sizes.values()) == 8
    for image, label in splits.train.concatenate(splits.validation).concatenate(splits.test):
        assert image.shape == (6, 9, 3) and len(np.unique(image.numpy())) == 1
        assert int(label) == int(image[0, 0, 0]) // 40  # the pixels of the file its label came with


def test_too_few_images_to_hold_out_is_a_clear_error(tmp_path, capsys):
    root = _make_folder(tmp_path / "tiny", per_class=2)
    with pytest.raises(ValueError, match=r"no images for the validation split: no class has enough.*val/ and test/"):
        data.load(str(root))
    _make_folder(tmp_path / "given" / "train")
    for name in ("cat", "dog"):
        (tmp_path / "given" / "val" / name).mkdir(parents=True)
        (tmp_path / "given" / "val" / name / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"given/val has no readable image: add some or remove the folder"):
        data.load(str(tmp_path / "given"))


def test_training_pipeline_augments_and_evaluation_is_deterministic():
    images = np.random.default_rng(0).integers(0, 256, size=(16, 40, 30, 3), dtype=np.uint8)
    raw = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 4))
    evaluate = data.pipeline(raw, image_size=32, num_classes=4, batch_size=8)
    first, second = (np.concatenate([x for x, _ in evaluate]) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    train = data.pipeline(
        raw, image_size=32, num_classes=4, batch_size=8, training=True, randaugment=True, mixup=0.8, seed=1
    )
    x, y = next(iter(train))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(y, axis=-1), 1.0, rtol=1e-5)
    assert np.any((y.numpy() > 0) & (y.numpy() < 1))  # MixUp made soft labels
    with pytest.raises(ValueError, match="Unknown augment='rotate'"):
        data.pipeline(raw, image_size=32, num_classes=4, batch_size=8, augment="rotate")


def test_training_epochs_are_a_function_of_seed_and_epoch_alone():
    """Epoch e's batches (order, crops, flips) are the same whether a run starts at epoch 0 or resumes at e."""
    images = np.random.default_rng(0).integers(0, 256, size=(24, 40, 30, 3), dtype=np.uint8)
    raw = tf.data.Dataset.from_tensor_slices((images, np.arange(24) % 4))
    common = dict(image_size=16, num_classes=4, batch_size=5, training=True, seed=3, epochs=3, mixup=0.8)
    keras_layers = dict(randaugment=True)  # RandAugment and MixUp: Keras' layers, their seeds keyed too
    whole = [x.numpy() for x, _ in data.pipeline(raw, **common, **keras_layers)]
    resumed = [x.numpy() for x, _ in data.pipeline(raw, first_epoch=1, **common, **keras_layers)]  # as a new process
    assert len(whole) == 3 * 4 and len(resumed) == 2 * 4  # 4 full batches an epoch, the partial one dropped
    np.testing.assert_array_equal(np.stack(resumed), np.stack(whole[4:]))
    assert not np.array_equal(whole[0], whole[4])  # epochs differ in order and augmentation
    plain = [x.numpy() for x, _ in data.pipeline(raw, **common)]
    cached = [x.numpy() for x, _ in data.pipeline(raw, cache=True, **common)]  # one cache, read back each epoch
    np.testing.assert_array_equal(np.stack(cached), np.stack(plain))
    # Without `epochs` (a pipeline for a user's own `fit`): one epoch a pass, drawn anew each pass.
    once = data.pipeline(raw, **{**common, "epochs": None})
    assert once.cardinality() == 4
    first, second = ([x.numpy() for x, _ in once] for _ in range(2))
    assert len(first) == 4 and not np.array_equal(np.stack(first), np.stack(second))


def test_images_in_sub_folders_of_a_class_belong_to_it(tmp_path, capsys):
    """As Keras' image_dataset_from_directory: cat/batch1/*.png are cats; symlinks followed, dangling ones noted."""
    root = tmp_path / "pets"
    for label, count in (("cat", 4), ("dog", 4)):
        for batch in ("batch1", "batch2"):
            (root / label / batch).mkdir(parents=True)
            for i in range(count // 2):
                (root / label / batch / f"{i}.png").write_bytes(_image_bytes("PNG", seed=i))
    (root / "cat" / "batch1" / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "batch1" / ".ipynb_checkpoints" / "0.png").write_bytes(_image_bytes("PNG"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(_image_bytes("PNG", seed=9))
    os.symlink(elsewhere, root / "dog" / "linked")  # a linked folder: its image is a dog
    os.symlink(root / "dog", root / "dog" / "linked" / "loop")  # a loop back: walked once
    os.symlink(tmp_path / "gone.png", root / "cat" / "gone.png")  # dangling: skipped, with a note
    splits = data.load(str(root))
    assert splits.labels == ["cat", "dog"]
    assert sum(splits.sizes.values()) == 9  # 4 cats, 4 + 1 dogs; not the hidden folder's, not the dangling link
    err = capsys.readouterr().err
    assert "skipping 1 symlink(s) to nothing (their target is gone)" in err and "gone.png" in err
    assert "not images" not in err and "Errno" not in err
    labels = sorted(int(y) for split in (splits.train, splits.validation, splits.test) for _, y in split)
    assert labels == [0] * 4 + [1] * 5


def test_the_suite_is_offline():
    # conftest's guard: a download attempt fails at once instead of reaching the network.
    import socket
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError) as failure:
        urllib.request.urlopen("http://93.184.215.14/", timeout=5)  # an IP: no name lookup first
    # tests/conftest.py's NetworkBlocked, by name: no test imports a conftest or another test module
    assert type(failure.value.reason).__name__ == "NetworkBlocked" and "offline" in str(failure.value.reason)
    with pytest.raises(socket.gaierror, match="tests must run offline"):  # no DNS query leaves either
        socket.getaddrinfo("www.cs.toronto.edu", 80)
    with socket.socket() as local:  # this machine stays reachable (the two-worker test needs it)
        local.bind(("127.0.0.1", 0))
        local.listen()
        with socket.create_connection(local.getsockname(), timeout=5):
            pass
