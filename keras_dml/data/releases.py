"""The official dataset archives' published checksums, and checking a file
against them.

A damaged download is caught twice: the archive readers check the container's
own checksums (the gzip CRC and length of the whole stream, every zip member's
CRC), and a file named like an official release is compared with its published
MD5. A file of the official name whose MD5 differs is refused when it has the
official size (bytes changed in place) or fails the container check; otherwise
it is a repacked archive, accepted with a note.
"""

import hashlib
import os
import warnings
import zipfile
from typing import NamedTuple


class Release(NamedTuple):
    md5: str
    size: int | None  # Bytes; None where no published size is known.
    url: str


# MD5s as published with the datasets and used by torchvision / open-reid;
# sizes as served by the dataset pages.
OFFICIAL = {
    "cifar-100-python.tar.gz": Release(
        "eb9058c3a382ffc7106e4002c42a8d85",
        169_001_437,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
    "cifar-100-binary.tar.gz": Release(
        "03b5dce01913d631647c71ecec9e9cb8",
        168_513_733,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    ),
    "cifar-10-python.tar.gz": Release(
        "c58f30108f718f92721af3b95e74349a",
        170_498_071,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar-10-binary.tar.gz": Release(
        "c32a1d4ab5d03f1284b67883e8d87530",
        170_052_171,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    ),
    "Market-1501-v15.09.15.zip": Release(
        "65005ab7d12ec1c44de4eeafe813e68a",
        None,
        "the Market-1501 page (Zheng et al., ICCV 2015)",
    ),
}


class RepackedArchiveWarning(UserWarning):
    """A file named like an official release that is not byte-identical to it
    but reads back intact (e.g. recompressed)."""


# (real path, size, mtime) -> verdict, so train and test reads hash once.
_checked = {}


def md5_of(path, chunk=1 << 22):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _zip_intact(path):
    """None if every member of the zip reads back with its CRC, else why not."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return str(error)
    return None if bad is None else f"member {bad} fails its CRC check"


def check_release(path, container_problem=None):
    """Compares `path` with the official release of its name, if any.

    Args:
        path: an archive file.
        container_problem: callable returning None when the archive's own
            checksums hold, else the problem (checked only when the MD5
            differs and the size does not decide); default: a zip's CRCs.

    Raises:
        ValueError: the file is a damaged copy of the official release; the
            message names the file, both MD5s and where to download it again.
    """
    release = OFFICIAL.get(os.path.basename(path))
    if release is None:
        return
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return
    digest = md5_of(path)
    if digest != release.md5:
        problem = None
        if release.size is not None and stat.st_size == release.size:
            problem = "bytes changed in place"
        else:
            check = container_problem or (lambda: _zip_intact(path))
            problem = check()
        if problem is not None:
            raise ValueError(
                f"{path} is damaged ({problem}): its MD5 is {digest}, the official "
                f"{os.path.basename(path)} has {release.md5}. Download it again "
                f"from {release.url}."
            )
        warnings.warn(
            f"{path} is not the official {os.path.basename(path)} (MD5 {digest}, "
            f"official {release.md5}) but reads back intact; using it as a "
            "repacked archive.",
            RepackedArchiveWarning,
            stacklevel=3,
        )
    _checked[key] = True
