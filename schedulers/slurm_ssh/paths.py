"""Member paths confined to their work root, checked before anything is sent to the cluster.
(Symlinks are checked on the cluster side, in the transport's SFTP calls.)"""

from __future__ import annotations

import posixpath

from schedulers.errors import PathRefused


def confine(work_root: str, relative: str) -> str:
    """The absolute path of `relative` under `work_root`; absolute paths, `..` and NUL refused."""
    if not work_root.startswith("/"):
        raise PathRefused(f"work root {work_root!r} is not absolute")
    if "\x00" in relative:
        raise PathRefused("path contains a NUL byte")
    if relative.startswith("/"):
        raise PathRefused(f"{relative!r} is absolute: paths are relative to the work directory")
    if ".." in relative.split("/"):
        raise PathRefused(f"{relative!r} contains '..'")
    normalized = posixpath.normpath(relative) if relative else "."
    root = posixpath.normpath(work_root)
    return root if normalized == "." else posixpath.join(root, normalized)
