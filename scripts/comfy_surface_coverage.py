"""Which names of the measured custom-node import list the ComfyUI surface answers.

Usage: ``python scripts/comfy_surface_coverage.py [LIST.md]`` (default: the shared
reference list). Loads the registry (with no packs) so the surface is active, then
resolves every listed dotted name: modules by import, attributes by getattr. Prints
counts (all names, and names used at load time) and the names left out.
"""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
from pathlib import Path

DEFAULT_LIST = Path("/work/shared/reference/custom_node_imports.md")


def _resolve(name: str) -> bool:
    """Whether a pack could reach ``name``."""
    from nodes.comfy_surface.loader import pack_import

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            renamed = parts[0] in ("nodes", "server")  # only packs see ComfyUI's modules under these names
            obj = pack_import(module_name) if renamed else importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except Exception:
            return False
        return True
    return False


def main(argv: list[str]) -> int:
    """Print the coverage of the list at ``argv[0]`` (or the default list)."""
    import torch

    torch.set_num_threads(1)
    from nodes.api import Services
    from nodes.folders import Folders
    from nodes.registry import build_registry

    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| (\d+) \| (\w+) \|$",
                      Path(argv[0] if argv else DEFAULT_LIST).read_text(), flags=re.M)
    empty = Path(tempfile.mkdtemp()) / "custom_nodes"
    empty.mkdir()
    build_registry(Services(folders=Folders(empty.parent)), custom_nodes_dirs=[empty])
    provided, missing = [], []
    for name, packs, at_load, _in in rows:
        (provided if _resolve(name) else missing).append((name, int(packs), int(at_load)))
    at_load = [r for r in provided + missing if r[2] > 0]
    print(f"provided {len(provided)} of {len(rows)} names; "
          f"{sum(1 for r in provided if r[2] > 0)} of {len(at_load)} used at load time")
    for name, packs, load in missing:
        print(f"missing {name} (packs {packs}, at load {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
