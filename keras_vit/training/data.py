"""Datasets for `model.fit`: TFDS by name, a folder of images, or the built-in digits.

`load(...)` returns raw splits, each a `tf.data.Dataset` of `(uint8 image
(H, W, 3), int label)`, images of any size. `pipeline(...)` turns one split
into batches for the model with the one preprocessing definition of
`keras_vit.preprocessing`, plus training-time augmentation.
"""

import concurrent.futures
import contextlib
import dataclasses
import io
import os
import shutil
import socket
import sys
import urllib.parse
import urllib.request

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vit.images import IMAGE_EXTENSIONS, read_image
from keras_vit.preprocessing import preprocessing_model
from keras_vit.training import digits as _digits  # noqa: F401  (registers the "digits" TFDS builder)
from keras_vit.training.settings import AUGMENTATIONS  # declared with the flag

_DOWNLOAD_AND_PREPARE = tfds.core.DatasetBuilder.download_and_prepare.__code__  # (each access wraps it anew)
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


@dataclasses.dataclass
class Splits:
    """Raw train / validation / test splits and what they hold."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    labels: list
    sizes: dict  # split name -> number of examples
    name: str

    @property
    def num_classes(self):
        return len(self.labels)

    def class_counts(self):
        """Training images per class (reads every training label once)."""
        labels = self.train.map(lambda image, label: label, num_parallel_calls=tf.data.AUTOTUNE)
        return np.bincount(np.fromiter(labels.as_numpy_iterator(), np.int64), minlength=self.num_classes).tolist()


def load(dataset="digits", *, data_dir=None, download=True, bad_files="skip", validation_fraction=0.1, seed=0):
    """Loads a dataset's raw splits.

    Args:
        dataset: a TFDS name (`"cifar10"`, `"tf_flowers"`, ...), `"digits"`
            (built in, offline), or the path of a folder of images with one
            sub-folder per class (optionally inside `train/`, `val/`, `test/`).
        data_dir: where TFDS keeps prepared data. Defaults to TFDS' default.
        download: let TFDS download a dataset that is not prepared yet.
        bad_files: for folders, `"skip"` unreadable files (each reported by
            path) or `"refuse"` to load the folder while any exists.
        validation_fraction: share of `train` held out for validation (and,
            when the dataset has no test split, as much again for testing).
        seed: the seed of that hold-out for folders.

    Returns:
        `Splits`.
    """
    if not 0 < validation_fraction < 0.5:
        raise ValueError(f"--val-fraction {validation_fraction} is out of range: it must be in (0, 0.5).")
    dataset = os.path.expanduser(str(dataset))
    if _is_folder(dataset):
        return _load_folder(dataset, bad_files, validation_fraction, seed)
    return _load_tfds(str(dataset), data_dir, download, validation_fraction)


def load_for_model(dataset, metadata, *, data_dir=None):
    """`load(dataset)` as the model's run loaded it, refused unless it has the model's labels.

    `metadata` is the run's `keras_vit.json`: its seed and bad-file rule give a folder (or a
    TFDS dataset without a test split) the same held-out test split as in training, not one
    made of the images the model trained on.
    """
    splits = load(
        dataset,
        data_dir=data_dir,
        seed=metadata.get("seed", 0),
        bad_files=metadata.get("bad_files", "skip"),
        validation_fraction=metadata.get("val_fraction", 0.1),
    )
    check_dataset_labels(splits.labels, metadata["labels"], dataset)
    return splits


def source(dataset):
    """What names `dataset` wherever it is loaded from: a folder's absolute path, or the TFDS name."""
    dataset = os.path.expanduser(str(dataset))
    return os.path.abspath(dataset) if _is_folder(dataset) else dataset


def check_dataset_labels(dataset_labels, model_labels, dataset):
    """Raises a `ValueError` unless `dataset` has the model's classes, in the model's order.

    Class indices only mean the same thing when the label names agree: a
    dataset with the same number of classes in another order would give a
    plausible but wrong accuracy.
    """
    dataset_labels, model_labels = [str(label) for label in dataset_labels], [str(label) for label in model_labels]
    if dataset_labels == model_labels:
        return
    if len(dataset_labels) != len(model_labels):
        problem = (
            f"it has {len(dataset_labels)} classes ({_few(dataset_labels)}), the model "
            f"{len(model_labels)} ({_few(model_labels)})"
        )
    else:
        i = next(i for i, (a, b) in enumerate(zip(dataset_labels, model_labels)) if a != b)
        problem = f"its class {i} is {dataset_labels[i]!r}, the model's is {model_labels[i]!r}"
    raise ValueError(
        f"Dataset {dataset!r} does not have the model's labels: {problem}. Use the dataset the model was trained on."
    )


def _few(labels, n=5):
    return ", ".join(labels[:n]) + (", ..." if len(labels) > n else "")


def _is_folder(dataset):
    """A path when written as one; a bare name is a TFDS dataset first, then a folder here."""
    if os.path.sep in dataset or dataset.startswith("."):
        return True
    return os.path.isdir(dataset) and dataset not in tfds.list_builders()


# --- TFDS ------------------------------------------------------------------------


def prepare(dataset, *, data_dir=None, download=True):
    """Builds a TFDS dataset that is not prepared yet (downloading it); nothing for a folder.

    `keras-vit train` calls it before seeding: a first build draws random numbers, and the
    same seed must give the same run on a fresh clone as on every later one.
    """
    dataset = os.path.expanduser(str(dataset))
    if not _is_folder(dataset):
        _tfds_builder(dataset, data_dir, download)


def _tfds_builder(name, data_dir, download):
    """The TFDS builder of `name`, prepared (downloaded and built) if it was not."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: not a TFDS dataset nor an existing folder. Use a TFDS name "
            "(see `tfds.list_builders()`), 'digits' (built in), or the path of a folder of images."
        ) from None
    if not builder.is_prepared():
        if not download and name != "digits":
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; allow downloading or "
                "point --data-dir at a folder that holds it."
            )
        _prepare(builder, name)
    return builder


def _load_tfds(name, data_dir, download, validation_fraction):
    builder = _tfds_builder(name, data_dir, download)
    _, label_key = builder.info.supervised_keys
    # A builder without split metadata (e.g. under `tfds.testing.mock_data`) is taken as train + test.
    names = set(builder.info.splits) or {"train", "test"}
    if "train" not in names:
        raise ValueError(f"TFDS dataset {name!r} has no 'train' split (it has {sorted(names)}).")
    chosen = tfds_split_names(names, int(round(validation_fraction * 100)))
    splits = {
        split: builder.as_dataset(split=spec, as_supervised=True).map(_to_rgb, num_parallel_calls=tf.data.AUTOTUNE)
        for split, spec in chosen.items()
    }
    return Splits(
        **splits,
        labels=list(builder.info.features[label_key].names),
        sizes={split: _num_examples(builder, spec, splits[split]) for split, spec in chosen.items()},
        name=name,
    )


def _prepare(builder, name):
    """`download_and_prepare`, leaving no half-made dataset folder behind if it fails.

    Offline, TFDS would retry for minutes and leave an empty folder; a connection tried
    first (seconds) turns that into one line saying what to do instead.
    """
    # Nothing to download: digits are built from scikit-learn's copy; under `tfds.testing.mock_data`
    # (which replaces `download_and_prepare`) nothing is built at all.
    if name != "digits" and tfds.core.DatasetBuilder.download_and_prepare.__code__ is _DOWNLOAD_AND_PREPARE:
        _check_can_download(builder, name)
    folder = os.path.join(os.fspath(builder.data_dir_root), builder.name)
    existed = os.path.exists(folder)
    try:
        with _unprinted() if name == "digits" else contextlib.nullcontext():
            builder.download_and_prepare()
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def _unprinted():
    """Digits build in seconds from a local copy: TFDS' "Downloading and preparing" lines and
    progress bars would tell a user nothing. (A real download keeps them.)"""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _check_can_download(builder, name, timeout=5):
    """Raises a `ConnectionError` unless the dataset's download host (or the proxy) takes a connection."""
    urls = list(builder.url_infos or ())
    if not urls:
        return  # the URLs are in the builder's code: nothing to try beforehand
    url = urllib.parse.urlsplit(urls[0])
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urllib.parse.urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else url
    address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and cannot be downloaded here "
            f"(no connection to {address[0]}: {error}). On a machine with network run "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}').download_and_prepare()\"` "
            f"and copy its ~/tensorflow_datasets/{builder.name}/ here, or pass --data-dir to a folder that holds it."
        ) from None


def _num_examples(builder, spec, ds):
    if builder.info.splits:
        return builder.info.splits[spec].num_examples
    return int(ds.reduce(0, lambda count, _: count + 1))  # no metadata: count once


def tfds_split_names(names, percent):
    """Uses `validation` and `test` when the dataset has them, else holds out slices of `train`."""
    test = "test" if "test" in names else ("validation" if "validation" in names else None)
    validation = "validation" if "validation" in names and test != "validation" else None
    held_out = percent * ((validation is None) + (test is None))
    chosen = {"train": f"train[:{100 - held_out}%]" if held_out else "train"}
    chosen["validation"] = validation or f"train[{100 - held_out}%:{100 - held_out + percent}%]"
    chosen["test"] = test or f"train[{100 - percent}%:]"
    return chosen


def _to_rgb(image, label):
    """Grey -> RGB and RGBA -> RGB, so every dataset feeds 3-channel uint8 images."""
    channels = image.shape[-1]
    if channels is None:
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3])
    elif channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    else:
        image = image[..., :3]
    return tf.ensure_shape(image, (None, None, 3)), label


# --- folders of images ----------------------------------------------------------


def _load_folder(root, bad_files, validation_fraction, seed):
    if bad_files not in ("skip", "refuse"):
        raise ValueError(f"bad_files={bad_files!r} must be 'skip' or 'refuse'.")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"No folder at {root}: pass a folder with one sub-folder of images per class.")
    split_roots = _split_roots(root) or {"train": root}
    labels = _class_folders(split_roots["train"])
    # Decoded before any hold-out, so held-out counts are of images that can be used.
    files = {split: _drop_unreadable(*_list_images(path, labels), bad_files) for split, path in split_roots.items()}
    files = _hold_out(files, validation_fraction, seed)
    _check_every_split_has_images(files, labels, split_roots)
    _report_classes_not_held_out(files, labels, split_roots)
    return Splits(
        **{split: _file_dataset(*files[split]) for split in ("train", "validation", "test")},
        labels=labels,
        sizes={split: len(files[split][0]) for split in ("train", "validation", "test")},
        name=os.path.basename(os.path.normpath(root)),
    )


def _sub_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _split_roots(root):
    """The folder of each split `root` has: `{"train": root/train, ...}`, or `{}` for class folders.

    A split name is never a class: `root` is either the split layout (`train/` and
    optionally `val/`, `test/`) or class folders only; anything in between is refused
    rather than guessed at.
    """
    folders = _sub_folders(root)
    found = [name for names in _SPLIT_FOLDERS.values() for name in names if name in folders]
    classes = [d for d in folders if d not in found]
    if found and classes:
        raise ValueError(
            f"{root} holds split folders ({', '.join(found)}) next to class folders ({', '.join(classes)}): "
            "put the class folders inside train/ (and val/, test/), or move the split folders out."
        )
    if found and "train" not in found:
        raise ValueError(
            f"{root} has {', '.join(found)} but no train/: put the training images' class folders in train/."
        )
    if "validation" in found and "val" in found:
        raise ValueError(f"{root} has validation/ and val/: keep one of them as the validation split.")
    return {
        split: os.path.join(root, name) for split, names in _SPLIT_FOLDERS.items() for name in names if name in found
    }


def _class_folders(root):
    labels = _sub_folders(root)
    if not labels:
        raise ValueError(f"{root} has no class sub-folders: put each class's images in a folder of its own.")
    if len(labels) < 2:
        raise ValueError(
            f"{root} has one class folder ({labels[0]}): a classifier needs at least 2 classes; "
            "add a folder of images for each other class."
        )
    return labels


def _list_images(root, labels):
    paths, ys, others, dangling = [], [], [], []
    for index, label in enumerate(labels):
        folder = os.path.join(root, label)
        images, not_images, broken = _walk_images(folder)
        others += not_images
        dangling += broken
        if not images:
            raise ValueError(
                f"Class folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}): add some or remove it."
            )
        paths += images
        ys += [index] * len(images)
    if dangling:
        _report(f"skipping {len(dangling)} symlink(s) to nothing (their target is gone)", dangling)
    if others:
        _report(f"ignoring {len(others)} file(s) that are not images", others)
    return paths, ys


def _walk_images(folder):
    """`(images, other files, dangling symlinks)` anywhere under a class folder, in a fixed order.

    As Keras' `image_dataset_from_directory`: images in sub-folders (`cats/batch1/*.png`) belong
    to the class too. Symlinks are followed (a folder reached twice, as through a loop, is walked
    once); hidden folders (`.ipynb_checkpoints`) are left out.
    """
    images, others, dangling, seen = [], [], [], set()

    def fail(error):
        raise error

    for path, folders, names in os.walk(folder, onerror=fail, followlinks=True):
        real = os.path.realpath(path)
        folders[:] = [] if real in seen else sorted(f for f in folders if not f.startswith("."))
        if real in seen:
            continue
        seen.add(real)
        for name in sorted(names):
            file = os.path.join(path, name)
            if not os.path.exists(file):
                dangling.append(file)
            elif name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(file)
            elif not name.startswith("."):
                others.append(file)
    return images, others, dangling


def _hold_out(files, fraction, seed):
    """Fills each missing validation / test split with a seeded per-class share of train's files.

    A class gives each missing split `fraction` of its images (at least one) only as long as it
    keeps one to train on: with both splits missing, a class of 1 or 2 images stays in train
    (and is reported: it is never measured).
    """
    missing = [split for split in ("validation", "test") if split not in files]
    if not missing:
        return files
    paths, ys = np.array(files["train"][0], dtype=str), np.array(files["train"][1], dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts = {split: [] for split in ("train", *missing)}
    for label in np.unique(ys):
        index = rng.permutation(np.flatnonzero(ys == label))
        n = min(max(1, int(round(fraction * len(index)))), (len(index) - 1) // len(missing))
        for k, split in enumerate(missing):
            parts[split] += list(index[k * n : (k + 1) * n])
        parts["train"] += list(index[len(missing) * n :])
    held_out = {split: (paths[sorted(i)].tolist(), ys[sorted(i)].tolist()) for split, i in parts.items()}
    return {**files, **held_out}


def _check_every_split_has_images(files, labels, split_roots):
    """A class without training images is a label the model never sees; an empty split breaks `fit`."""
    trained = set(files["train"][1])
    for index, label in enumerate(labels):
        if index not in trained:
            raise ValueError(
                f"Class folder {os.path.join(split_roots['train'], label)} has no readable image to train on: "
                "add images to it or remove the folder."
            )
    for split in ("validation", "test"):
        if files[split][0]:
            continue
        if split in split_roots:
            raise ValueError(f"{split_roots[split]} has no readable image: add some or remove the folder.")
        raise ValueError(
            f"There are no images for the {split} split: no class has enough readable images to hold one "
            "out of train and keep one to train on; add images, or give val/ and test/ folders next to train/."
        )


def _report_classes_not_held_out(files, labels, split_roots):
    """Names the classes too small to give the held-out splits an image: trained on, never measured."""
    held_out = [split for split in ("validation", "test") if split not in split_roots]
    small = sorted({i for split in held_out for i in range(len(labels)) if i not in set(files[split][1])})
    if small:
        _report(
            f"{len(small)} class(es) have too few images to hold out {' and '.join(held_out)} images "
            f"(a class needs {len(held_out) + 1}: one for each split); they are trained on but never "
            "measured",
            [os.path.join(split_roots["train"], labels[i]) for i in small],
        )


def _readable(path):
    try:
        read_image(path)
        return True
    except ValueError:
        return False


def _drop_unreadable(paths, ys, bad_files):
    """Decodes every file once up front, so a broken one never stops an epoch half-way."""
    with concurrent.futures.ThreadPoolExecutor() as pool:
        ok = list(pool.map(_readable, paths))
    bad = [p for p, good in zip(paths, ok) if not good]
    if bad and bad_files == "refuse":
        raise ValueError(
            f"{len(bad)} file(s) are corrupt, truncated or not images: {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}. Remove them, or skip them (--bad-files skip)."
        )
    if bad:
        _report(f"skipping {len(bad)} unreadable image file(s)", bad)
    return [p for p, good in zip(paths, ok) if good], [y for y, good in zip(ys, ok) if good]


def _report(message, paths):
    print(
        f"keras_vit.training.data: {message}: " + ", ".join(paths[:10]) + (" ..." if len(paths) > 10 else ""),
        file=sys.stderr,
    )


def _file_dataset(paths, ys):
    # Pillow, through `keras-vit predict`'s reader: one list of image types (WebP and TIFF, which
    # TensorFlow cannot decode, too) and the same pixels in training as in prediction.
    def read(path, label):
        image = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, 3)), label

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(ys, tf.int64)))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def raw_arrays(ds, image_size, limit):
    """Up to `limit` raw uint8 images of a split as one array (for export reports and int8 calibration).

    Returned as they are when all share a size; else resized to `image_size` with the training
    resize and rounded, so they stack.
    """
    images, labels = zip(*((image.numpy(), int(label)) for image, label in ds.take(limit)))
    if len({image.shape for image in images}) > 1:
        resize = preprocessing_model(image_size).layers[0]  # the training resize, no normalisation
        images = [
            np.clip(np.round(keras.ops.convert_to_numpy(resize(image))), 0, 255).astype(np.uint8) for image in images
        ]
    return np.stack(images), np.array(labels)


def report_arrays(splits, image_size, test_limit=1000, calibration_limit=300):
    """`(test images, test labels, calibration images)` for an export's parity report and int8.

    Up to `test_limit` test images with their labels and `calibration_limit` training images,
    raw uint8, as `raw_arrays` returns them.
    """
    test_images, test_labels = raw_arrays(splits.test, image_size, test_limit)
    calibration, _ = raw_arrays(splits.train, image_size, calibration_limit)
    return test_images, test_labels, calibration


# --- the input pipeline ---------------------------------------------------------


def pipeline(
    ds,
    *,
    image_size,
    num_classes,
    batch_size,
    scaling="vit",
    training=False,
    augment="crop_flip",
    randaugment=False,
    mixup=0.0,
    cutmix=0.0,
    cache=False,
    shuffle=True,
    shuffle_buffer=10_000,
    seed=0,
    drop_remainder=None,
    epochs=None,
    first_epoch=0,
):
    """Batches one raw split for the model: `(float images, one-hot labels)`.

    Training adds, in order: shuffling (unless `shuffle=False`), an Inception crop (random area 8-100%,
    aspect 3/4-4/3, as the original ViT code) and a horizontal flip
    (`augment`), Keras' `RandAugment`, then Keras' `MixUp` or `CutMix` on the
    batch. Evaluation only resizes and normalises, and keeps the last partial batch unless
    `drop_remainder=True` (several JAX processes: Keras splits only batches of a fixed size).

    Training's order and augmentation are a function of `(seed, epoch)` alone. With `epochs`, the
    dataset holds epochs `first_epoch` to `epochs - 1` back to back: fit it with
    `steps_per_epoch=size // batch_size`, and a run resumed at epoch k sees the batches the
    uninterrupted run saw (`keras-vit train --resume`). Without, each pass over it is a new
    epoch drawn from `seed`.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augment={augment!r}; expected one of {AUGMENTATIONS}.")
    resize, normalize = preprocessing_model(image_size, scaling).layers
    if cache:
        ds = ds.cache()

    def prepare(image, label, key=None):
        if key is not None and augment != "none":
            crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            image = _inception_crop(image, crop_key)
            if augment == "crop_flip":
                image = tf.image.stateless_random_flip_left_right(image, flip_key)
        return resize(image), tf.one_hot(label, num_classes)

    rand_augment = _keyed(keras.layers.RandAugment(value_range=(0, 255), seed=seed)) if randaugment else None
    mix = None
    if mixup or cutmix:
        mix = _keyed(
            keras.layers.MixUp(alpha=mixup, seed=seed) if mixup else keras.layers.CutMix(factor=cutmix, seed=seed)
        )

    def prepare_batch(images, labels, key):
        rand_key, mix_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        if rand_augment:
            images = rand_augment(images, rand_key)
        images = normalize(images)
        if mix:
            mixed = mix({"images": images, "labels": labels}, mix_key)
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    if training:
        size = int(ds.cardinality())
        # A pass without `epochs` draws its epoch from `seed`, anew each pass.
        keys = tf.data.Dataset.range(first_epoch, epochs) if epochs is not None else _random_epoch(seed)
        ds = keys.flat_map(
            lambda epoch: _epoch(
                ds,
                tf.stack([tf.constant(seed, tf.int64), epoch]),
                prepare,
                prepare_batch,
                batch_size,
                shuffle and shuffle_buffer,
            )
        )
        if size >= 0:  # the batches an epoch has (the last partial one dropped), as Keras' progress bar shows
            ds = ds.apply(
                tf.data.experimental.assert_cardinality(
                    (size // batch_size) * (1 if epochs is None else epochs - first_epoch)
                )
            )
    else:
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Several workers shard by element: TFDS and folders may have fewer files than workers.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _random_epoch(seed):
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)


def _epoch(ds, key, prepare, prepare_batch, batch_size, shuffle_buffer):
    """One epoch's batches of `ds`, their order and augmentation drawn from `key` alone (`(seed, epoch)`).

    Each example's crop and flip, and each batch's RandAugment and MixUp/CutMix, come from stateless
    ops keyed by its place in the epoch, so a parallel map draws the same numbers whatever order its
    calls run in. Training drops the last partial batch: a tiny batch is a noisy step, and replicas
    of a distributed step would weigh its examples unequally.
    """
    shuffle_key, example_key, batch_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    if shuffle_buffer:
        ds = _shuffled(ds, shuffle_key, shuffle_buffer)
    ds = ds.enumerate().map(
        lambda i, example: prepare(*example, tf.random.experimental.stateless_fold_in(example_key, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.enumerate().map(
        lambda j, batch: prepare_batch(*batch, tf.random.experimental.stateless_fold_in(batch_key, j)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


class _KeyedSeeds(keras.random.SeedGenerator):
    """A Keras augmentation layer's seeds, drawn from a key given with each call rather than a variable.

    Keras' `RandAugment`, `MixUp` and `CutMix` draw from a `SeedGenerator` variable: in a parallel
    tf.data map its draws depend on the order the calls run in, and its state on how many batches
    this process ran, which `--resume` cannot restore. Keyed by the batch's `(seed, epoch, place)`,
    they draw the same numbers in a resumed run as in the uninterrupted one.
    """

    def __init__(self):
        super().__init__(seed=0)
        self.key, self.draws = None, 0

    def next(self, ordered=True):
        self.draws += 1  # each draw of one call (traced once) gets a key of its own
        return tf.random.experimental.stateless_fold_in(self.key, self.draws)


def _keyed(layer):
    """`call(inputs, key)`: `layer(inputs, training=True)` with its random draws keyed by `key`."""
    seeds = _KeyedSeeds()
    layer.generator = seeds  # what Keras' augmentation layers draw from on their own backend

    def call(inputs, key):
        seeds.key, seeds.draws = key, 0
        return layer(inputs, training=True)

    return call


def _shuffled(ds, key, buffer_size):
    """`ds.shuffle(buffer_size)` with its seed a tensor drawn from `key`.

    `Dataset.shuffle` takes its seed as a Python int only, so a shuffle inside `flat_map` (once per
    epoch) could not depend on the epoch; TensorFlow's own shuffle op takes it as a tensor.
    """
    seeds = tf.random.stateless_uniform([2], key, minval=None, maxval=None, dtype=tf.int64)
    specs = tf.nest.flatten(ds.element_spec)
    variant = tf.raw_ops.ShuffleDataset(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=seeds[0],
        seed2=seeds[1],
        output_types=[spec.dtype for spec in specs],
        output_shapes=[spec.shape for spec in specs],
        reshuffle_each_iteration=False,
    )
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def _inception_crop(image, key, area_range=(0.08, 1.0)):
    """A random crop of 8-100% of the area (Szegedy et al. 2015), as big_vision's `inception_crop`, drawn from `key`."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        tf.zeros((0, 0, 4), tf.float32),
        area_range=area_range,
        aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0,
        use_image_if_no_bounding_boxes=True,
        seed=key,
    )
    return tf.ensure_shape(tf.slice(image, begin, size), (None, None, 3))
