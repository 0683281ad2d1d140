"""One process per run folder.

Two processes training into one folder would overwrite each other's
checkpoints. The lock is an OS file lock (`flock`) on `<model_dir>/.lock`: the
kernel releases it when its process ends however it ends, so a killed run
never leaves the folder locked. The file also names its holder, for the
message the second process prints.
"""

import errno
import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder; the message names it."""


class RunLock:
    """Holds `<folder>/.lock` from `acquire()` to `release()` (or the end of
    the process)."""

    def __init__(self, folder):
        self.path = os.path.join(folder, LOCK_FILE)
        self._file = None

    def acquire(self):
        try:
            # O_NOFOLLOW: a symbolic link planted as `.lock` (by anyone who
            # can write to a shared folder) is refused, never written through.
            descriptor = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(
                    f"{self.path} is a symbolic link; a run folder's files must be "
                    "its own. Remove the link, or use another --model_dir."
                ) from None
            raise
        handle = os.fdopen(descriptor, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            raise RunFolderInUse(
                f"{os.path.dirname(self.path)} is in use by another run "
                f"({_describe(holder)}). Wait for it to end, or use another "
                "--model_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            )
        )
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _describe(holder):
    try:
        info = json.loads(holder)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']}, since {started}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
