"""Where SaveImage and PreviewImage put their files (PROTOCOL.md section 7.2).

Naming follows ComfyUI so existing tooling finds the files: ``<prefix>_<5-digit counter>_.png``,
the counter one past the highest existing file with the same prefix, subfolders taken from the
prefix. Both the backend substitutions (``%width%``, ``%height%``, ``%year%``...) and the editor's
``%date:FORMAT%`` are applied here, so a prompt run from the CLI names files as the editor would.
A prefix that would leave the output folder is refused.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

_DATE_TOKENS = re.compile(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s")
_PATTERN = re.compile(r"%([^%]+)%")


class SavePathError(ValueError):
    """The filename prefix points outside the output folder."""


@dataclass(frozen=True)
class SaveTarget:
    """The folder and first file name for a batch of images."""

    folder: Path
    filename: str
    counter: int
    subfolder: str

    def name(self, index: int = 0) -> str:
        """The file name of the ``index``-th image of the batch."""
        return f"{self.filename}_{self.counter + index:05}_.png"


def _format_date(fmt: str, now: _dt.datetime) -> str:
    values = {
        "yyyy": f"{now.year:04}", "yy": f"{now.year % 100:02}", "MM": f"{now.month:02}", "M": str(now.month),
        "dd": f"{now.day:02}", "d": str(now.day), "hh": f"{now.hour:02}", "h": str(now.hour),
        "mm": f"{now.minute:02}", "m": str(now.minute), "ss": f"{now.second:02}", "s": str(now.second),
    }
    return _DATE_TOKENS.sub(lambda m: values[m.group(0)], fmt)


def substitute_prefix(prefix: str, width: int, height: int, now: _dt.datetime | None = None) -> str:
    """Apply ``%date:FORMAT%``, ``%width%``, ``%height%``, ``%year%``... to a filename prefix.

    Unknown patterns (such as the editor's ``%Node.widget%``, which needs the UI graph) are left as they are.
    """
    if "%" not in prefix:
        return prefix
    now = now or _dt.datetime.now()
    simple = {
        "width": str(width), "height": str(height), "year": str(now.year), "month": f"{now.month:02}",
        "day": f"{now.day:02}", "hour": f"{now.hour:02}", "minute": f"{now.minute:02}", "second": f"{now.second:02}",
    }

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("date:"):
            return _format_date(key[5:], now)
        return simple.get(key, match.group(0))

    return _PATTERN.sub(replace, prefix)


def _next_counter(folder: Path, filename: str) -> int:
    """One past the highest ``<filename>_NNNNN_`` counter in ``folder`` (1 if none)."""
    stem = os.path.normcase(filename + "_")
    highest = 0
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for entry in entries:
        if os.path.normcase(entry[: len(stem)]) != stem:
            continue
        digits = entry[len(stem):].split("_", 1)[0]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return highest + 1


def save_target(output_dir: Path, prefix: str, width: int, height: int) -> SaveTarget:
    """Resolve ``prefix`` (after substitutions) inside ``output_dir`` and pick the next counter.

    Creates the folder. Raises :class:`SavePathError` if the prefix escapes ``output_dir``.
    """
    prefix = substitute_prefix(prefix, width, height)
    if "\x00" in prefix:
        raise SavePathError("filename prefix contains a NUL byte")
    root = Path(output_dir).resolve()
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    folder = (root / subfolder).resolve()
    if os.path.isabs(prefix) or (folder != root and root not in folder.parents):
        raise SavePathError(f"saving image outside the output folder is not allowed: {prefix!r}")
    folder.mkdir(parents=True, exist_ok=True)
    rel = folder.relative_to(root).as_posix()
    return SaveTarget(folder, filename, _next_counter(folder, filename), "" if rel == "." else rel)


def model_file(output_dir: Path, prefix: str, suffix: str = "") -> Path:
    """Where a saving node writes a model: ``<prefix><suffix>_<5-digit counter>_.safetensors`` in ``output_dir``."""
    target = save_target(output_dir, prefix, 0, 0)
    return target.folder / f"{target.filename}{suffix}_{target.counter:05}_.safetensors"
