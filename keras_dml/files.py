"""Writing files so that a crash leaves the old content or the new, never half,
and so that they get the permissions any file written here would get."""

import contextlib
import os
import tempfile


def umask():
    """The process's file-mode creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    """Writes `path` through a temporary file and a rename.

    The temporary file is private (0600); it gets 0666 minus the umask before
    the rename, as `open(path, "w")` would give, so a server running as
    another user (TF Serving reading `models.config`) can read it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix=f".{os.path.basename(path)}-", delete=False
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
