"""The run folder: what `keras-vit train` writes, what everything else reads. The one module that knows it.

    runs/digits/
        model.keras            the trained model (loads with `safe_mode=True` after `import keras_vit`)
        keras_vit.json         what its input expects: image size, scaling, labels; and its `ViTConfig`
        .lock                  the pid of the process writing the run, while it runs: a second writer is refused
        train_config.json      the settings asked for, written when the run starts: `--resume` continues
                               with them, and it marks the folder as a run (`--overwrite` deletes only runs)
        results.json           test metrics, written last: a run with it has finished
        history.csv, .json     per-epoch metrics; curves.png, confusion_matrix.png
        checkpoints/best.keras the best epoch by validation accuracy
        backup/                Keras' BackupAndRestore state, gone once `fit` ends
        logs/                  TensorBoard
        export/                `keras_vit.deploy.export`'s folder

Every file is written whole or not at all (`keras_vit.files`).
"""

import contextlib
import json
import os
import re
import shutil
import zipfile

import keras

from keras_vit import files  # importing keras_vit registers its layers: safe mode loads them without code
from keras_vit.model import model_config
from keras_vit.preprocessing import check_scaling

MODEL = "model.keras"
METADATA = "keras_vit.json"
SETTINGS = "train_config.json"
RESULTS = "results.json"
HISTORY_CSV, HISTORY_JSON = "history.csv", "history.json"
CURVES, CONFUSION_MATRIX = "curves.png", "confusion_matrix.png"
BEST = os.path.join("checkpoints", "best.keras")
BACKUP, LOGS, EXPORT = "backup", "logs", "export"
LOCK = ".lock"
ADAPTERS = "adapters.safetensors"  # a --lora run's adapters and head, alone (keras_vit.load_adapters)

METADATA_FILE = METADATA  # the name 0.1.0 exported


def write_metadata(directory, *, image_size, scaling, labels, **extra):
    """Writes `keras_vit.json` into `directory` atomically (temp file, then rename)."""
    metadata = {"image_size": list(image_size), "scaling": check_scaling(scaling), "labels": list(labels), **extra}
    files.write_json(os.path.join(directory, METADATA), metadata)
    return metadata


def read_metadata(path):
    """Reads `keras_vit.json` from a model's folder (or next to a model file, or its run's for
    `RUN/checkpoints/best.keras`)."""
    file = _metadata_file(path)
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"No {METADATA} next to {path}: it holds the image size, scaling and labels "
            "the model expects. Models written by `keras-vit train` have one."
        )
    return read_json(file)


def _metadata_file(path):
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    file = os.path.join(directory, METADATA)
    run = os.path.dirname(directory)
    if not os.path.exists(file) and os.path.basename(directory) == os.path.dirname(BEST):  # a run's checkpoint
        return os.path.join(run, METADATA) if os.path.exists(os.path.join(run, METADATA)) else file
    return file


def read_json(file):
    """A JSON file keras-vit wrote; a damaged one is a `ValueError` naming it, not the parser's position alone."""
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{file} is not valid JSON ({error}): it was damaged or edited by hand; restore it from a copy, "
            "or write the run again."
        ) from None


def has_metadata(model_path):
    """Whether a `.keras` file has its `keras_vit.json` beside it (a run's model, not a bare file)."""
    return os.path.exists(_metadata_file(model_path))


def model_path(path):
    """The `.keras` file of a run folder (or the file itself), or `None` if there is none."""
    path = os.fspath(path)
    candidate = os.path.join(path, MODEL) if os.path.isdir(path) else path
    return candidate if candidate.endswith(".keras") and os.path.isfile(candidate) else None


def load_model(path):
    """`(model, metadata, path of the .keras file)` from a run folder or `.keras` file.

    Raises:
        FileNotFoundError: no `.keras` file, or no `keras_vit.json` beside it.
        ValueError: the file is no `.keras` archive, or the model's input size
            or number of outputs disagrees with `keras_vit.json`.
    """
    file = model_path(path)
    if file is None:
        raise FileNotFoundError(
            f"No model at {path}: expected a folder with {MODEL} and {METADATA} "
            "(as `keras-vit train` writes), or a .keras file."
        )
    # Keras reports a file that is no zip archive as "File not found", though it is there.
    if not zipfile.is_zipfile(file):
        raise ValueError(
            f"{file} is not a valid .keras archive (a zip file written by model.save); "
            "was it saved by another program or truncated?"
        )
    metadata = read_metadata(file)
    model = keras.saving.load_model(file, safe_mode=True)
    check_model_matches_metadata(model, metadata, file)
    return model, metadata, os.path.abspath(file)


def check_model_matches_metadata(model, metadata, path):
    """Raises a `ValueError` when `keras_vit.json` describes another model than `model`.

    A mismatch would otherwise surface far away: an IndexError when naming the
    top classes, or a TensorFlow shape error deep inside the export.
    """
    labels, image_size = metadata["labels"], list(metadata["image_size"])
    # dynamic_image_size: keras_vit.json's size is the one used; NaFlex takes patches of any grid.
    takes_any_size = takes_patches(model) or None in model.input_shape[1:3]
    if model.output_shape[-1] != len(labels):
        raise ValueError(
            f"{path} has {model.output_shape[-1]} outputs but {METADATA} beside it lists "
            f"{len(labels)} labels; the two come from different models. Put the {METADATA} "
            "written with this model beside it."
        )
    if not takes_any_size and list(model.input_shape[1:3]) != image_size:
        raise ValueError(
            f"{path} takes {tuple(model.input_shape[1:3])} images but {METADATA} beside it "
            f"says image_size={tuple(image_size)}; the two come from different models. Put the "
            f"{METADATA} written with this model beside it."
        )


def save(model, folder, *, labels, scaling="vit", **extra):
    """Makes `folder` a model folder as `keras-vit train` would: `model.keras` and its `keras_vit.json`.

    What `keras-vit export`, `predict` and `evaluate` take; for a model trained
    in Python. `labels` names the outputs in order; `scaling` is how its
    pixels were scaled (`keras_vit.preprocessing.SCALINGS`).
    """
    architecture = model_config(model).to_dict()
    planned = {"image_size": list(input_size(model)), "labels": list(labels)}
    check_model_matches_metadata(model, planned, folder)  # before anything is written
    os.makedirs(folder, exist_ok=True)
    write_metadata(
        folder, image_size=input_size(model), scaling=scaling, labels=labels, architecture=architecture, **extra
    )
    save_model(model, folder)
    return folder


def input_size(model):
    """`(height, width)` of the images a model is fed: its input's, or for a model that takes any size
    (`dynamic_image_size=True`) the size it was built at, which preprocessing and export then use."""
    if takes_patches(model):
        return model_config(model).image_size  # the position table's grid, in pixels
    size = tuple(model.input_shape[1:3])
    return model_config(model).image_size if None in size else size


def takes_patches(model):
    """Whether `model` takes SigLIP 2's NaFlex input (patches, their grids, a padding mask), not images."""
    return isinstance(model.input, dict) and "patches" in model.input


def save_model(model, run):
    """Writes `model.keras` whole (Keras saves only to a name ending in `.keras`: a temporary one)."""
    tmp = os.path.join(run, f".{MODEL}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(run, MODEL))


# --- a run's life: started, fitted, finished -------------------------------------------


def is_run(folder):
    """A folder keras-vit made for a run (a finished one from before `train_config.json` existed too).

    A folder that merely holds a `history.csv` is never taken for one.
    """
    return any(os.path.exists(os.path.join(folder, name)) for name in (SETTINGS, METADATA))


def default_output(dataset, model=None):
    """`runs/<dataset>`, or `runs/<dataset>-<model>` for another model than the default.

    Named after the dataset so that a run on one dataset never lands in (or, with `--overwrite`,
    deletes) another dataset's folder: `runs/digits`, `runs/photos-S16`, `runs/cifar10-B16`.
    """
    name = os.path.basename(os.path.normpath(os.path.expanduser(str(dataset))))  # a TFDS name, or a folder's
    if model:  # a variant or registry name ("S/16:augreg") without its tag, or a file's name
        model = str(model).split(":")[0]
        stem = os.path.splitext(os.path.basename(model))[0] if os.path.splitext(model)[1] else model
        name += "-" + (os.path.basename(os.path.dirname(model)) if stem == "model" else stem).replace("/", "")
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9._-]+", "", name) or "run")


def check_output(output, overwrite, resume):
    """Refuses to clobber a folder unless asked, or to resume what is not an unfinished run."""
    _check_parent(output)
    if not os.path.exists(output):
        if resume:
            raise FileNotFoundError(f"--resume: there is no run in {output} to continue.")
        return
    if not os.path.isdir(output):
        raise NotADirectoryError(f"--output {output} is a file; choose a folder.")
    check_not_in_use(output)
    if resume:
        if not os.path.exists(os.path.join(output, SETTINGS)):
            raise FileNotFoundError(f"--resume: {output} holds no unfinished keras-vit run (no {SETTINGS}).")
        if finished(output):
            raise FileExistsError(f"The run in {output} has finished; nothing to resume. Use --overwrite to redo it.")
        return
    if not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it, or --resume to continue its run.")
    if os.listdir(output) and not is_run(output):
        raise FileExistsError(
            f"{output} is not a keras-vit run folder; refusing to delete it. Choose another --output."
        )


def _check_parent(output):
    """A path through a file is no folder to make, nor one under a folder this process cannot write:
    said before any image is decoded (the command line names the folder in one line)."""
    parent = os.path.dirname(os.path.abspath(output))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"--output {output}: {parent} is a file, not a folder; choose another --output.")
    files.check_writable(parent)


def start(output, settings, *, overwrite=False):
    """Makes the run folder (deleting a previous run's with `overwrite`), locks it and stores `settings`.

    The lock is this process's until `unlock(output)`: see `lock`.
    """
    check_output(output, overwrite, resume=False)
    if os.path.exists(output):
        shutil.rmtree(output)
    os.makedirs(output)
    lock(output)
    files.write_json(os.path.join(output, SETTINGS), settings)


# --- one writer at a time: the lock file ---------------------------------------------
# A file holding the writer's pid, made with O_EXCL (atomic: of two processes, one makes it).
# fcntl locks would vanish with the process too, but not on every file system a run folder may
# be on (NFS), and a pid in a file also says who holds the folder.


def _lock_owner(output):
    """The pid of the live process holding `output`'s lock, or `None` (no lock, or a stale one)."""
    try:
        with open(os.path.join(output, LOCK)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):  # no lock, no folder, or a path through a file
        return None
    return pid if pid > 0 and files.alive(pid) else None


def check_not_in_use(output):
    """Raises a `FileExistsError` naming the process while another live process writes the run."""
    owner = _lock_owner(output)
    if owner is not None and owner != os.getpid():
        raise FileExistsError(
            f"{output} is in use by another keras-vit process (pid {owner}), still writing its run; "
            "wait for it to end or stop it, or choose another --output."
        )


def lock(output):
    """Marks `output` as written by this process; refuses while another live process holds it.

    A lock left by a process that is gone (killed, power cut) is stale and taken over.
    """
    path = os.path.join(output, LOCK)
    for _ in range(2):
        check_not_in_use(output)
        with contextlib.suppress(FileNotFoundError):
            if _lock_owner(output) is None:
                os.remove(path)  # stale, or our own
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another process took it between the check and here: check again
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise FileExistsError(f"{output}: could not take its lock file {path}; another process keeps making it.")


def unlock(output):
    """Removes `output`'s lock if this process holds it (and nothing else)."""
    if _lock_owner(output) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output, LOCK))


def read_settings(output):
    """The settings a run was started with, or `None` where there is no run."""
    path = os.path.join(output, SETTINGS)
    if not os.path.exists(path):
        return None
    return read_json(path)


def fit_finished(output):
    """Whether the run was killed after `fit` (model saved, backup gone) but before its results."""
    return os.path.exists(os.path.join(output, MODEL)) and not os.path.exists(os.path.join(output, BACKUP))


def epochs_done(output):
    """How many epochs Keras' `BackupAndRestore` state in `backup/` has (0 for none): where `--resume` goes on."""
    for folder in (os.path.join(output, BACKUP), os.path.join(output, BACKUP, "worker_0")):
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            with open(os.path.join(folder, "training_metadata.json")) as f:
                return int(json.load(f)["epoch"])
    return 0


def finished(output):
    return os.path.exists(os.path.join(output, RESULTS))


def write_results(output, results):
    """`results.json`, written last: it marks the run as finished."""
    files.write_json(os.path.join(output, RESULTS), results)
