"""`export_peers` from a process on JAX or PyTorch.

TF Serving serves TensorFlow graphs, and the exported graph's preprocessing
is TensorFlow code, so a cohort trained on another backend is exported by a
TensorFlow process: this one saves the model into a temporary folder, starts
`python -m keras_dml.export_process` with `KERAS_BACKEND=tensorflow`, which
loads it and calls `export_peers` with the same arguments, and raises the
child's error as its own. The weights cross backends exactly (`.keras`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras

# The errors `export_peers` raises on bad input, re-raised as the same type.
_ERRORS = {e.__name__: e for e in (ValueError, FileExistsError, OSError)}


_PREFIX = "keras_dml_export_"


def export_in_tensorflow(model, export_dir, **options):
    """`keras_dml.export.export_peers(model, export_dir, **options)`, run by a
    TensorFlow child process on a saved copy of `model`.

    The child dies with this process (however this one ends), before it can
    replace anything: an orphan finishing later would overwrite a newer run's
    export with older weights. Copies that killed exports left are removed.
    """
    _remove_orphaned_copies()
    folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}_")
    try:
        if isinstance(model, (list, tuple)):
            saved = [os.path.join(folder, f"peer{i}.keras") for i in range(len(model))]
            for peer, path in zip(model, saved):
                peer.save(path)
        else:
            saved = os.path.join(folder, "cohort.keras")
            model.save(saved)
        request = os.path.join(folder, "request.json")
        with open(request, "w") as f:
            json.dump(
                {
                    "model": saved,
                    "export_dir": export_dir,
                    "options": options,
                    "parent": os.getpid(),
                },
                f,
            )
        child = subprocess.run(
            [sys.executable, "-m", "keras_dml.export_process", request],
            env={**os.environ, "KERAS_BACKEND": "tensorflow"},
            capture_output=True,
            text=True,
        )
        answer_path = os.path.join(folder, "answer.json")
        if not os.path.exists(answer_path):
            raise RuntimeError(
                f"The TensorFlow export process failed (exit code "
                f"{child.returncode}):\n{child.stderr[-3000:]}"
            )
        with open(answer_path) as f:
            answer = json.load(f)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if "error" in answer:
        raise _ERRORS.get(answer["error"], RuntimeError)(answer["message"])
    return answer["written"]


def _remove_orphaned_copies():
    """Removes the temporary cohort copies of exports whose parent process
    is gone (it was killed before its `finally` ran)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(_PREFIX):
            continue
        try:
            pid = int(name[len(_PREFIX) :].split("_")[0])
        except ValueError:
            continue  # keras_dml <= 0.3's names hold no pid: left alone.
        if not _alive(pid):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Another user's process.
    return True


def _die_with_parent(parent, folder):
    """Ends this process, removing `folder`, when `parent` ends.

    The parent's death delivers SIGTERM (Linux: PR_SET_PDEATHSIG; elsewhere a
    thread watching the parent id); the handler runs between two Python
    steps, so a stopped child that is continued later exits before it writes
    another file.
    """
    import signal
    import threading

    def leave(*_):
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGTERM, leave)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    else:

        def watch():
            while os.getppid() == parent:
                threading.Event().wait(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # It ended before the signal was armed.
        leave()


def _main(request_path):
    with open(request_path) as f:
        request = json.load(f)
    if "parent" in request:
        _die_with_parent(request["parent"], os.path.dirname(request_path))

    # Here, in the child only: the parent imports this module from
    # keras_dml.export (a cycle at load), and needs neither.
    from keras_dml.export import export_peers
    from keras_dml.saving import load_keras_file

    saved = request["model"]
    if isinstance(saved, list):
        model = [load_keras_file(path, "peer") for path in saved]
    else:
        model = load_keras_file(saved, "cohort")
    options = request["options"]
    try:
        answer = {"written": export_peers(model, request["export_dir"], **options)}
    except tuple(_ERRORS.values()) as error:
        kind = next(c for c in type(error).__mro__ if c.__name__ in _ERRORS)
        answer = {"error": kind.__name__, "message": str(error)}
    answer_path = os.path.join(os.path.dirname(request_path), "answer.json")
    with open(answer_path, "w") as f:
        json.dump(answer, f)


if __name__ == "__main__":
    if keras.backend.backend() != "tensorflow":
        sys.exit("keras_dml.export_process runs with KERAS_BACKEND=tensorflow.")
    _main(sys.argv[1])
