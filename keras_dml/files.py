"""Writing a run's files: atomically (a crash leaves the old content or the
new, never half), with the permissions any file written here would get, and
with one clear error when the disk is full or read-only.

Every temporary name starts with `.tmp-` (or `.old-` for a replaced export
version), so `remove_stale_temporaries` can clear what a killed run left.
"""

import contextlib
import json
import os
import shutil
import tempfile

TEMPORARY_PREFIX = ".tmp-"
_STALE_PREFIXES = (TEMPORARY_PREFIX, ".old-")
# Names keras_dml 0.1 gave its temporaries (runs killed before an upgrade).
_LEGACY_SUFFIX = ".tmp.weights.h5"
_LEGACY_WRITER_PREFIXES = (
    ".state.json-",
    ".config.json-",
    ".results.json-",
    ".history.csv-",
    ".models.config-",
    ".table.md-",
    ".reid_results.md-",
    ".reid_results.json-",
)


class OutputError(OSError):
    """Writing an output failed (disk full, read-only, ...). The message names
    what was being written and what is intact; nothing half-written is left."""

    def __str__(self):
        return self.strerror or super().__str__()


def describe(error):
    """A short reason for an OSError: "No space left on device" and the like."""
    if error.errno is not None:
        return os.strerror(error.errno)
    return str(error)


@contextlib.contextmanager
def writing(where, note=""):
    """Turns an OSError raised inside into an `OutputError` naming `where`.

    Args:
        where: the file or folder being written.
        note: what is intact and what to do; a string, or a callable giving
            one (evaluated only on failure).
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        text = note() if callable(note) else note
        raise OutputError(
            error.errno, f"Could not write {where}: {describe(error)}. {text}".strip()
        ) from None


def ensure_writable_dir(path, flag="path"):
    """Creates the folder `path` if needed and checks that files can be
    written into it, before any work is done.

    Raises:
        ValueError: `path` is a file.
        OutputError: the folder cannot be created or written (read-only, full,
            no permission).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a file; expected a folder.")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=TEMPORARY_PREFIX):
            pass
    except OSError as error:
        raise OutputError(
            error.errno, f"{flag}={path} cannot be written: {describe(error)}."
        ) from None


def refuse_links(folder, flag="--model_dir"):
    """Raises ValueError naming the first symbolic link inside `folder`.

    Everything a run writes goes inside its folder; a link planted there (by
    anyone who can write to a shared folder) would redirect a write, or a
    rename, to a file of the training user's elsewhere. `folder` itself may
    be a link: the user chose it.
    """
    for root, dirs, names in os.walk(folder):
        for name in sorted(dirs + names):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise ValueError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); a run "
                    f"folder's files must be its own. Remove the link, or use "
                    f"another {flag}."
                )


# A `.keras` archive holds weights, which barely compress (about 1.1:1), and
# small JSON. A member declaring far more than that is a decompression bomb;
# a 3 GB member of zeros packs into 3 MB, which Keras would expand on disk.
_MAX_RATIO = 50
_SMALL_MEMBER = 1 << 20  # Below 1 MiB any ratio is fine (JSON compresses well).


def zip_bomb_problem(archive):
    """What is wrong with an open `zipfile.ZipFile` whose members declare
    implausibly more bytes than they take (checked from the directory, before
    any member is read), or None."""
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if info.file_size > _SMALL_MEMBER and info.file_size > _MAX_RATIO * max(
            info.compress_size, 1
        ):
            return (
                f"member {info.filename} declares {info.file_size:,} bytes packed "
                f"into {info.compress_size:,} (a decompression bomb, not model "
                "weights)"
            )
    packed = sum(info.compress_size for info in archive.infolist())
    if total > _SMALL_MEMBER and total > _MAX_RATIO * max(packed, 1):
        return (
            f"its members declare {total:,} bytes packed into {packed:,} (a "
            "decompression bomb, not model weights)"
        )
    return None


def umask():
    """The process's file-mode creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_path(path):
    """A new, empty private file beside `path`, under an unpredictable name
    that `remove_stale_temporaries` knows and that ends as `path` does (Keras
    picks the format by the extension).

    Created exclusively (`mkstemp`): a fixed name could be planted in a shared
    folder beforehand as a symbolic link, and the write would then go through
    it to another file of the user's.
    """
    directory, name = os.path.split(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix=TEMPORARY_PREFIX, suffix=f"-{name}"
    )
    os.close(descriptor)
    return temporary


def atomic_write_text(path, text):
    """Writes `path` through a temporary file and a rename.

    The temporary file is private (0600); it gets 0666 minus the umask before
    the rename, as `open(path, "w")` would give, so a server running as
    another user (TF Serving reading `models.config`) can read it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = tempfile.NamedTemporaryFile(
        "w",
        dir=directory,
        prefix=f"{TEMPORARY_PREFIX}{os.path.basename(path)}-",
        delete=False,
    )
    try:
        with temporary as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary.name, 0o666 & ~umask())
        os.replace(temporary.name, path)
    except BaseException:
        # Nothing half-written stays behind; `path` keeps its old content.
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary.name)
        raise


def write_json(path, content):
    """`content` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(content, indent=2, sort_keys=False) + "\n")


def save_model(model, path):
    """`model.save(path)` (a `.keras` file) through a temporary file and a
    rename; a failed save leaves `path` as it was and no temporary file."""
    temporary = temporary_path(path)
    try:
        model.save(temporary)
        os.chmod(temporary, 0o666 & ~umask())  # mkstemp's file is 0600.
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def remove_stale_temporaries(folder, depth=None):
    """Removes the temporary files and folders a killed run left in `folder`
    and its subfolders (checkpoints, export versions), `depth` levels down
    (1: `folder` itself; None: all). Returns their paths."""
    removed = []
    top = os.path.abspath(folder).rstrip(os.sep).count(os.sep)
    for root, dirs, files in os.walk(folder):
        if depth is not None and os.path.abspath(root).count(os.sep) - top >= depth:
            dirs[:] = []
            continue
        for name in list(dirs) + files:
            stale = (
                name.startswith(_STALE_PREFIXES)
                or name.endswith(_LEGACY_SUFFIX)
                or name.startswith(_LEGACY_WRITER_PREFIXES)
            )
            if not stale:
                continue
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed.append(path)
    return removed
