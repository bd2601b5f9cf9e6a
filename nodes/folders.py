"""Where models, inputs and outputs live: ComfyUI's folder keys, per registry.

One :class:`Folders` object replaces ComfyUI's module-level ``folder_paths``: the
model folder keys and default directories of PROTOCOL.md 8.1 (relative to a base
directory), the legacy aliases ``clip``/``unet``, the extension filters, the
``extra_model_paths.yaml`` files of 8.2 and the input/output/temp/user
directories of 8.3. Nothing here is global, so two registries (two tests) can look
at different folders side by side.

Listings are recomputed on every call rather than cached by directory mtimes as
ComfyUI does: model folders are small enough that a walk costs less than getting
the invalidation right, and a file dropped into a folder shows up at once.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

import yaml

#: ComfyUI's ``supported_pt_extensions``.
PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

#: Old folder names that ComfyUI maps onto their new keys.
LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}

#: Marker in an extension set: list directories holding ``model_index.json`` (diffusers layouts).
FOLDER = "folder"

# key -> (dirs under <base>/models, dirs under the output dir, extensions); an empty
# extension set means "any file", as in ComfyUI.
_DEFAULT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), ("checkpoints",), PT_EXTENSIONS),
    "configs": (("configs",), (), frozenset({".yaml"})),
    "loras": (("loras",), ("loras",), PT_EXTENSIONS),
    "vae": (("vae",), ("vae",), PT_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), ("clip",), PT_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), ("diffusion_models",), PT_EXTENSIONS),
    "clip_vision": (("clip_vision",), (), PT_EXTENSIONS),
    "style_models": (("style_models",), (), PT_EXTENSIONS),
    "embeddings": (("embeddings",), (), PT_EXTENSIONS),
    "diffusers": (("diffusers",), (), frozenset({FOLDER})),
    "vae_approx": (("vae_approx",), (), PT_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), (), PT_EXTENSIONS),
    "gligen": (("gligen",), (), PT_EXTENSIONS),
    "upscale_models": (("upscale_models",), (), PT_EXTENSIONS),
    "latent_upscale_models": (("latent_upscale_models",), (), PT_EXTENSIONS),
    "hypernetworks": (("hypernetworks",), (), PT_EXTENSIONS),
    "photomaker": (("photomaker",), (), PT_EXTENSIONS),
    "classifiers": (("classifiers",), (), frozenset({""})),
    "model_patches": (("model_patches",), (), PT_EXTENSIONS),
    "audio_encoders": (("audio_encoders",), (), PT_EXTENSIONS),
}

_SKIPPED_DIRS = frozenset({".git"})


class UnsafePathError(ValueError):
    """A user-supplied file name that would leave its folder (``..``, absolute, NUL)."""


class FolderConfigError(ValueError):
    """An ``extra_model_paths.yaml`` that cannot be read or has the wrong shape."""


def canonical_key(key: str) -> str:
    """The folder key ``key`` stands for (``unet`` -> ``diffusion_models``, ``clip`` -> ``text_encoders``)."""
    return LEGACY_KEYS.get(key, key)


def safe_relative(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside its folder, or raise :class:`UnsafePathError`.

    Both ``/`` and ``\\`` separate components, so a Windows-style ``..\\x`` is caught too.
    """
    if not name or "\x00" in name:
        raise UnsafePathError(f"invalid file name {name!r}")
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if path.is_absolute() or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafePathError(f"absolute paths are not allowed: {name!r}")
    if any(part == ".." for part in path.parts):
        raise UnsafePathError(f"path leaves its folder: {name!r}")
    return path


class Folders:
    """The directories one registry (one server) reads models from and writes images to.

    ``base_dir`` plays the ComfyUI directory (``--base-directory``): model folders
    default to ``<base>/models/<key>``, and input/output/temp/user to
    ``<base>/input`` etc. unless given. ``<base>/extra_model_paths.yaml`` is read if it
    exists, then every file of ``extra_config_paths`` in order. Nothing is created on
    disk here; savers create their directories when they write.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        input_dir: str | os.PathLike[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        user_dir: str | os.PathLike[str] | None = None,
        extra_config_paths: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.base_dir = Path(base_dir).expanduser().absolute()
        self.models_dir = self.base_dir / "models"
        self.input_dir = _dir_or(input_dir, self.base_dir / "input")
        self.output_dir = _dir_or(output_dir, self.base_dir / "output")
        self.temp_dir = _dir_or(temp_dir, self.base_dir / "temp")
        self.user_dir = _dir_or(user_dir, self.base_dir / "user")
        self._paths: dict[str, list[Path]] = {}
        self._extensions: dict[str, frozenset[str]] = {}
        for key, (model_dirs, output_dirs, extensions) in _DEFAULT_KEYS.items():
            self._paths[key] = [self.models_dir / d for d in model_dirs] + [self.output_dir / d for d in output_dirs]
            self._extensions[key] = extensions
        self._paths["custom_nodes"] = [self.base_dir / "custom_nodes"]
        self._extensions["custom_nodes"] = frozenset()
        default_yaml = self.base_dir / "extra_model_paths.yaml"
        if default_yaml.is_file():
            self.load_extra_config(default_yaml)
        for config in extra_config_paths:
            self.load_extra_config(config)

    # -- folder keys -------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every folder key known (defaults plus keys added by YAML files)."""
        return list(self._paths)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._paths))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and canonical_key(key) in self._paths

    def paths(self, key: str) -> list[Path]:
        """The directories searched for ``key``, in resolution order (KeyError if unknown)."""
        return list(self._paths[canonical_key(key)])

    def extensions(self, key: str) -> frozenset[str]:
        """The extension filter of ``key`` (lower-case, with dot; empty = any file)."""
        return self._extensions[canonical_key(key)]

    def add_path(self, key: str, path: str | os.PathLike[str], is_default: bool = False) -> None:
        """Add a search directory for ``key``: first if ``is_default``, else last.

        A new key gets no extension filter, as ComfyUI does for unknown YAML keys.
        """
        key = canonical_key(key)
        directory = Path(os.path.normpath(Path(path).expanduser().absolute()))
        dirs = self._paths.setdefault(key, [])
        self._extensions.setdefault(key, frozenset())
        if directory in dirs:
            if not is_default:
                return
            dirs.remove(directory)
        if is_default:
            dirs.insert(0, directory)
        else:
            dirs.append(directory)

    def load_extra_config(self, config_path: str | os.PathLike[str]) -> None:
        """Apply one ``extra_model_paths.yaml`` (PROTOCOL.md 8.2)."""
        config_path = Path(config_path).expanduser().absolute()
        try:
            data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise FolderConfigError(f"cannot read {config_path}: {exc}") from exc
        if data is None:
            return
        if not isinstance(data, Mapping):
            raise FolderConfigError(f"{config_path}: expected a mapping of sections at the top level")
        yaml_dir = config_path.parent
        for section_name, section in data.items():
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise FolderConfigError(f"{config_path}: section {section_name!r} is not a mapping")
            self._apply_section(dict(section), yaml_dir)

    def _apply_section(self, section: dict[str, object], yaml_dir: Path) -> None:
        base_path = section.pop("base_path", None)
        is_default = bool(section.pop("is_default", False))
        base: Path | None = None
        if base_path:
            base = Path(os.path.expandvars(os.path.expanduser(str(base_path))))
            if not base.is_absolute():
                base = yaml_dir / base
        for key, value in section.items():
            if value is None:
                continue
            for line in str(value).split("\n"):
                line = line.strip()
                if not line:
                    continue
                self.add_path(str(key), (base or yaml_dir) / line, is_default=is_default)

    # -- files ------------------------------------------------------------------------

    def filename_list(self, key: str) -> list[str]:
        """Files for ``key`` across its directories: relative, ``/``-separated, deduplicated, sorted.

        Walks recursively (following symlinks, skipping ``.git``) and keeps files whose
        extension passes the key's filter; for ``diffusers`` the entries are directories
        that hold a ``model_index.json``.
        """
        extensions = self.extensions(key)
        found: set[str] = set()
        for directory in self.paths(key):
            found.update(_walk(directory, extensions))
        return sorted(found)

    def full_path(self, key: str, name: str) -> Path | None:
        """The file ``name`` of folder ``key`` in the first directory that has it, or None.

        Raises :class:`UnsafePathError` for names that would escape the folder; the
        check is on the name, so a model symlinked into the folder still resolves.
        """
        relative = safe_relative(name)
        for directory in self.paths(key):
            candidate = directory.joinpath(*relative.parts)
            if candidate.is_file() or (FOLDER in self.extensions(key) and candidate.is_dir()):
                return candidate
        return None

    def folder_paths(self) -> dict[str, list[str]]:
        """``{key: [directories]}`` as ``GET /internal/folder_paths`` returns it."""
        return {key: [str(p) for p in dirs] for key, dirs in self._paths.items()}

    def directory(self, kind: str) -> Path:
        """The ``input``, ``output`` or ``temp`` directory (the ``type`` of ``/view`` and uploads)."""
        dirs = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}
        if kind not in dirs:
            raise KeyError(kind)
        return dirs[kind]

    def input_files(self, content_types: Iterable[str] = ("image",)) -> list[str]:
        """Sorted file names directly in the input dir whose guessed MIME type is one of ``content_types``.

        This is the list LoadImage offers (ComfyUI lists only the top level of ``input/``).
        An empty ``content_types`` keeps every file.
        """
        wanted = tuple(content_types)
        try:
            entries = [e for e in self.input_dir.iterdir() if e.is_file()]
        except OSError:
            return []
        names = []
        for entry in entries:
            mime, _ = mimetypes.guess_type(entry.name)
            if not wanted or (mime is not None and mime.split("/")[0] in wanted):
                names.append(entry.name)
        return sorted(names)


def _dir_or(value: str | os.PathLike[str] | None, default: Path) -> Path:
    return Path(value).expanduser().absolute() if value is not None else default


def _walk(directory: Path, extensions: frozenset[str]) -> Iterable[str]:
    """Relative ``/`` paths under ``directory`` that pass ``extensions``."""
    if not directory.is_dir():
        return
    want_folders = FOLDER in extensions
    for root, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        root_path = Path(root)
        if want_folders:
            if "model_index.json" in filenames and root_path != directory:
                yield root_path.relative_to(directory).as_posix()
            continue
        for filename in filenames:
            if not extensions or os.path.splitext(filename)[1].lower() in extensions:
                yield (root_path / filename).relative_to(directory).as_posix()


def split_annotation(filename: str) -> tuple[str, str | None]:
    """``"x.png [output]"`` -> ``("x.png", "output")``; other names are returned unchanged."""
    for kind in ("output", "input", "temp"):
        suffix = f" [{kind}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], kind
    return filename, None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
