"""Reading dataset archives (tar, zip) in memory, refusing members that could
escape an extraction folder.

Nothing here extracts to disk: the readers need a few members' bytes, so they
read them straight from the archive. A member that an extracting tool would
write outside its folder (absolute path, `..`, a link, a device) still marks
the archive as tampered with, so it is refused rather than skipped.
"""

import os
import posixpath
import tarfile
import zipfile
import zlib

from keras_dml.data import releases

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# What a damaged archive raises while being listed or read.
_ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
)


def is_tar_archive(path):
    return os.path.isfile(path) and str(path).endswith(TAR_SUFFIXES)


def is_zip_archive(path):
    return os.path.isfile(path) and str(path).endswith(".zip")


def check_member_name(archive, name):
    """Raises ValueError unless `name` stays inside the archive's folder."""
    normalized = name.replace("\\", "/")
    if (
        normalized.startswith("/")
        or (len(normalized) > 1 and normalized[1] == ":")
        or ".." in normalized.split("/")
    ):
        raise ValueError(
            f"{os.path.basename(archive)}: member {name!r} points outside the "
            "archive's folder (absolute path or '..'); refusing to read an archive "
            "that could overwrite other files when extracted."
        )
    return posixpath.normpath(normalized)


def read_tar_members(path, wanted):
    """Reads the members of a tar archive whose normalized names are in `wanted`.

    Args:
        path: a `.tar`, `.tar.gz` or `.tgz` file.
        wanted: member names, e.g. `{"cifar-100-binary/train.bin"}`.

    Returns:
        A dict from each wanted name found to its bytes, and the set of all
        regular-file member names (to say what the archive holds when a wanted
        name is missing).

    Raises:
        ValueError: the archive is damaged, or one of its members is unsafe.
    """
    found, names = {}, set()
    archive = os.path.basename(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            _read_tar(tar, path, wanted, found, names)
            # Reading to the end makes gzip check the CRC and length of the
            # whole stream: tar itself has no checksum over file contents, so
            # bytes altered in a member would otherwise be read silently.
            while tar.fileobj.read(1 << 20):
                pass
    except _ARCHIVE_ERRORS as error:
        raise ValueError(
            f"{archive}: damaged, truncated or not a tar archive ({error}). "
            "Download it again."
        ) from error
    releases.check_release(path, container_problem=lambda: None)
    return found, names


def _read_tar(tar, path, wanted, found, names):
    """Adds the wanted members of an open tar to `found`, every regular file
    to `names`; refuses unsafe members."""
    archive = os.path.basename(path)
    for member in tar:
        name = check_member_name(path, member.name)
        if member.issym() or member.islnk():
            raise ValueError(
                f"{archive}: member {member.name!r} is a link; "
                "dataset archives hold regular files only."
            )
        if not (member.isfile() or member.isdir()):
            raise ValueError(
                f"{archive}: member {member.name!r} is a device or FIFO; "
                "dataset archives hold regular files only."
            )
        if member.isfile():
            names.add(name)
            if name in wanted:
                found[name] = tar.extractfile(member).read()


def list_zip_members(path):
    """The regular-file member names of a zip archive, each checked to be safe."""
    archive = os.path.basename(path)
    releases.check_release(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except _ARCHIVE_ERRORS as error:
        raise ValueError(
            f"{archive}: not a readable zip archive, or truncated ({error})."
        ) from error
    names = []
    for info in infos:
        check_member_name(path, info.filename)
        # Unix symlinks in a zip carry S_IFLNK in the high bits of external_attr.
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ValueError(
                f"{archive}: member {info.filename!r} is a link; "
                "dataset archives hold regular files only."
            )
        if not info.is_dir():
            names.append(info.filename)
    return names


def read_zip_members(path, names):
    """The bytes of the given zip members, in the given order."""
    archive = os.path.basename(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return [zf.read(name) for name in names]
    except _ARCHIVE_ERRORS as error:
        raise ValueError(
            f"{archive}: could not read member ({error}); the archive is damaged."
        ) from error
