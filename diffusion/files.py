"""Writing a file so that no reader ever sees half of it.

Images, checkpoints and benchmark models are written to a hidden ``.NAME.XXXX.part`` file
beside the target and renamed over it when complete. No ``*.png`` or ``*.safetensors``
glob and no model-folder listing matches that name, so a client watching a folder only
ever sees whole files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    The finished file gets the usual mode for a new file (``0666`` less the umask), not
    ``mkstemp``'s ``0600``. ``path``'s folder must exist.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
