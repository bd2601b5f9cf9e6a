"""ComfyUI's ``folder_paths``, answered by one registry's :class:`~nodes.folders.Folders`.

:func:`folder_paths_module` makes a fresh module over a ``Folders``; the pack loader puts
it in ``sys.modules["folder_paths"]`` before each load, so each registry's packs keep the
module of their own folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from ..folders import PT_EXTENSIONS, Folders, UnsafePathError, split_annotation
from ..save_paths import save_target
from . import missing


def folder_paths_module(folders: Folders) -> ModuleType:
    """A ``folder_paths`` module over ``folders`` with ComfyUI's functions and attributes."""
    module = ModuleType("folder_paths", "ComfyUI's folder_paths, answered by a noodlebox Folders object.")
    module.__getattr__ = missing("folder_paths")  # type: ignore[attr-defined]
    module.base_path = str(folders.base_dir)
    module.models_dir = str(folders.models_dir)
    module.input_directory = str(folders.input_dir)
    module.output_directory = str(folders.output_dir)
    module.temp_directory = str(folders.temp_dir)
    module.user_directory = str(folders.user_dir)
    module.supported_pt_extensions = set(PT_EXTENSIONS)
    module.folder_names_and_paths = {k: ([str(p) for p in folders.paths(k)], set(folders.extensions(k)))
                                     for k in folders}
    module.get_filename_list = folders.filename_list
    module.get_folder_paths = lambda key: [str(p) for p in folders.paths(key)]
    module.add_model_folder_path = lambda key, path, is_default=False: folders.add_path(key, path, is_default)
    module.get_input_directory = lambda: str(folders.input_dir)
    module.get_output_directory = lambda: str(folders.output_dir)
    module.get_temp_directory = lambda: str(folders.temp_dir)
    module.get_user_directory = lambda: str(folders.user_dir)

    def get_directory_by_type(kind: str) -> str | None:
        try:
            return str(folders.directory(kind))
        except KeyError:
            return None

    def get_full_path(key: str, name: str) -> str | None:
        try:
            found = folders.full_path(key, name)
        except UnsafePathError:
            return None
        return None if found is None else str(found)

    def get_full_path_or_raise(key: str, name: str) -> str:
        found = get_full_path(key, name)
        if found is None:
            raise FileNotFoundError(f"Model in folder '{key}' with filename '{name}' not found.")
        return found

    def annotated_filepath(name: str) -> tuple[str, str | None]:
        plain, kind = split_annotation(name)
        return plain, None if kind is None else str(folders.directory(kind))

    def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
        plain, base = annotated_filepath(name)
        if base is None:
            base = default_dir if default_dir is not None else str(folders.input_dir)
        return os.path.join(base, plain)

    def exists_annotated_filepath(name: str) -> bool:
        return os.path.exists(get_annotated_filepath(name))

    def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                            image_height: int = 0) -> tuple[str, str, int, str, str]:
        target = save_target(Path(output_dir), filename_prefix, image_width, image_height)
        return str(target.folder), target.filename, target.counter, target.subfolder, filename_prefix

    def filter_files_extensions(files: Any, extensions: Any) -> list[str]:
        wanted = {e.lower() for e in extensions}
        return sorted(f for f in files if not wanted or os.path.splitext(f)[1].lower() in wanted)

    for fn in (get_directory_by_type, get_full_path, get_full_path_or_raise, annotated_filepath,
               get_annotated_filepath, exists_annotated_filepath, get_save_image_path, filter_files_extensions):
        setattr(module, fn.__name__, fn)
    return module
