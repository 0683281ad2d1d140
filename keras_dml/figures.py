"""Writing matplotlib figures as PNG files (Agg backend: no display needed)."""

import contextlib
import os

from keras_dml.files import temporary_path, umask


def save_figure(figure, path, tight=True):
    """Writes a matplotlib figure as PNG through a temporary file, and closes
    it (after `tight_layout()`, unless the caller laid it out itself)."""
    import matplotlib.pyplot as plt

    if tight:
        figure.tight_layout()
    temporary = temporary_path(path)
    try:
        figure.savefig(temporary, dpi=120, format="png")
        os.chmod(temporary, 0o666 & ~umask())  # mkstemp's file is 0600.
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    finally:
        plt.close(figure)
