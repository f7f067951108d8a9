"""Writing files and folders all at once: a reader never sees half of one.

Everything keras_vit writes for a user (checkpoints, metadata, run files, exports) goes through
here: written under a temporary name beside the target, then renamed over it, which is atomic on
one file system. `tempfile` creates its files 0600 and folders 0700; they get the permissions the
user's umask gives any new file instead, so a model server running as another user can read them.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0)  # the only way to read it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Yields a file object for a temporary file that becomes `path` when the block completes."""
    path = os.path.abspath(os.fspath(path))
    check_writable(os.path.dirname(path))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, value):
    with atomic_write(path) as f:
        json.dump(value, f, indent=2)


@contextlib.contextmanager
def atomic_directory(target):
    """Yields a fresh folder beside `target` that replaces `target` only if the block completes."""
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    check_writable(parent)
    prefix = f".{os.path.basename(target)}.partial-"
    _remove_abandoned(parent, prefix)
    staging = tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}-")
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        if os.path.exists(target):
            retired = staging + ".old"
            os.rename(target, retired)
            os.rename(staging, target)
            shutil.rmtree(retired)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_writable(folder):
    """Raises a `PermissionError` naming `folder` where no file can be made in it: else the error
    would name the temporary file that could not be made, which the user never asked for."""
    if os.access(folder, os.W_OK | os.X_OK):  # False for root too, on a read-only or immutable folder
        return
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, "Read-only file system", folder)
    raise PermissionError(errno.EACCES, "Permission denied", folder)


def _remove_abandoned(parent, prefix):
    """Deletes staging folders left by a process that was killed (SIGKILL skips every `finally`)."""
    for name in os.listdir(parent):
        pid = name[len(prefix) :].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def alive(pid):
    """Whether a process with this pid exists (a lock's or a staging folder's owner)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


# What to do about the file system's refusals, by errno.
_FILE_SYSTEM_ADVICE = {
    errno.EACCES: "permission denied: give yourself write access there, or choose another folder",
    errno.EPERM: "operation not permitted: give yourself write access there, or choose another folder",
    errno.EROFS: "the file system is read-only: choose a folder on a writable disk",
    errno.ENOSPC: "no space left on the device: free some space (or choose another disk) and run it again",
    errno.EDQUOT: "disk quota exceeded: free some space (or choose another disk) and run it again",
}


def os_error_line(error, writes=None, after_space=None):
    """One line for an `OSError` the file system raised (or TensorFlow's out-of-space error), naming the
    path and what to do; `None` for anything else, which is a bug and keeps its traceback.

    `writes` is the folder the command writes, named when the error names no file (a full disk
    says so on `write`, without a path); `after_space` is what to run once space is freed.
    """
    if isinstance(error, OSError):
        number, path = error.errno, error.filename
    elif type(error).__name__ == "ResourceExhaustedError" and "no space left" in str(error).lower():
        number, path = errno.ENOSPC, None  # tf.errors: a SavedModel's variables on a full disk
    else:
        return None
    if number not in _FILE_SYSTEM_ADVICE:
        return None
    advice = _FILE_SYSTEM_ADVICE[number]
    if number in (errno.ENOSPC, errno.EDQUOT) and after_space:
        advice += f" ({after_space})"
    where = path or writes
    return f"{where}: {advice}." if where else f"{advice}."
