"""Model folders, extra_model_paths.yaml, and refusing names that leave their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.folders import FolderConfigError, Folders, UnsafePathError, safe_relative


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_default_keys_dirs_and_legacy_aliases(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    assert f.paths("checkpoints") == [tmp_path / "models/checkpoints", tmp_path / "output/checkpoints"]
    assert f.paths("unet") == f.paths("diffusion_models") == [
        tmp_path / "models/unet", tmp_path / "models/diffusion_models", tmp_path / "output/diffusion_models"]
    assert f.paths("clip") == f.paths("text_encoders")
    assert f.paths("controlnet") == [tmp_path / "models/controlnet", tmp_path / "models/t2i_adapter"]
    assert f.extensions("configs") == {".yaml"}
    assert {"checkpoints", "loras", "vae", "embeddings", "vae_approx", "upscale_models", "custom_nodes"} <= set(
        f.keys())
    assert "clip" in f and "nonsense" not in f
    assert (f.input_dir, f.output_dir, f.temp_dir, f.user_dir) == (
        tmp_path / "input", tmp_path / "output", tmp_path / "temp", tmp_path / "user")
    assert not (tmp_path / "models").exists()  # nothing is created on disk
    with pytest.raises(KeyError):
        f.paths("nonsense")


def test_explicit_io_dirs(tmp_path: Path) -> None:
    f = Folders(tmp_path / "base", output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    assert f.output_dir == tmp_path / "out" and f.input_dir == tmp_path / "in"
    assert f.paths("loras")[-1] == tmp_path / "out/loras"
    assert f.directory("output") == tmp_path / "out"


def test_filename_list_recursive_filtered_sorted_dedup(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    touch(tmp_path / "models/checkpoints/b.safetensors")
    touch(tmp_path / "models/checkpoints/sub/a.CKPT")
    touch(tmp_path / "models/checkpoints/notes.txt")
    touch(tmp_path / "models/checkpoints/.git/x.safetensors")
    touch(tmp_path / "output/checkpoints/b.safetensors")  # same name in the second dir: listed once
    touch(tmp_path / "output/checkpoints/merged.sft")
    assert f.filename_list("checkpoints") == ["b.safetensors", "merged.sft", "sub/a.CKPT"]
    assert f.filename_list("loras") == []
    touch(tmp_path / "models/classifiers/noext")
    touch(tmp_path / "models/classifiers/with.ext")
    assert f.filename_list("classifiers") == ["noext"]


def test_diffusers_lists_model_folders(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    touch(tmp_path / "models/diffusers/sd15/model_index.json", b"{}")
    touch(tmp_path / "models/diffusers/sd15/unet/config.json", b"{}")
    touch(tmp_path / "models/diffusers/junk/readme.md")
    assert f.filename_list("diffusers") == ["sd15"]
    assert f.full_path("diffusers", "sd15") == tmp_path / "models/diffusers/sd15"


def test_full_path_resolution_order(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    first = touch(tmp_path / "models/checkpoints/m.safetensors")
    touch(tmp_path / "output/checkpoints/m.safetensors")
    only_second = touch(tmp_path / "output/checkpoints/sub/n.safetensors")
    assert f.full_path("checkpoints", "m.safetensors") == first
    assert f.full_path("checkpoints", "sub/n.safetensors") == only_second
    assert f.full_path("checkpoints", "missing.safetensors") is None


@pytest.mark.parametrize("name", [
    "../secret.safetensors", "sub/../../x.ckpt", "/etc/passwd", "..\\..\\win.ini", "C:\\x.ckpt", "", "a\x00b",
])
def test_full_path_refuses_escapes(tmp_path: Path, name: str) -> None:
    touch(tmp_path / "models/secret.safetensors")
    with pytest.raises(UnsafePathError):
        Folders(tmp_path).full_path("checkpoints", name)


def test_safe_relative_keeps_inner_paths() -> None:
    assert str(safe_relative("a/b/c.png")) == "a/b/c.png"
    assert str(safe_relative("a\\b.png")) == "a/b.png"


def test_symlinked_model_still_resolves(tmp_path: Path) -> None:
    real = touch(tmp_path / "elsewhere/big.safetensors")
    link = tmp_path / "models/checkpoints/big.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    f = Folders(tmp_path)
    assert f.filename_list("checkpoints") == ["big.safetensors"]
    assert f.full_path("checkpoints", "big.safetensors") == link


def test_extra_model_paths_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB_MODELS", str(tmp_path / "shared"))
    config = tmp_path / "conf/extra.yaml"
    touch(config, b"""
a111:
    base_path: $NB_MODELS/a1111
    checkpoints: models/Stable-diffusion
    vae: models/VAE
    loras: |
        models/Lora
        models/LyCORIS
    unet: models/unet
    my_things: stuff
    empty_key:
comfy_default:
    base_path: ../preferred
    is_default: true
    checkpoints: ckpts
relative_section:
    embeddings: emb
nothing:
""")
    f = Folders(tmp_path / "base", extra_config_paths=[config])
    a1111 = tmp_path / "shared/a1111"
    assert f.paths("checkpoints") == [tmp_path / "preferred/ckpts", tmp_path / "base/models/checkpoints",
                                      tmp_path / "base/output/checkpoints", a1111 / "models/Stable-diffusion"]
    assert f.paths("loras")[-2:] == [a1111 / "models/Lora", a1111 / "models/LyCORIS"]
    assert f.paths("diffusion_models")[-1] == a1111 / "models/unet"  # legacy key mapped
    assert f.paths("embeddings")[-1] == tmp_path / "conf/emb"  # no base_path: relative to the YAML
    assert f.paths("my_things") == [a1111 / "stuff"] and f.extensions("my_things") == frozenset()
    assert "empty_key" not in f.folder_paths()  # a key without a value adds nothing
    touch(a1111 / "models/Stable-diffusion/x.safetensors")
    touch(tmp_path / "preferred/ckpts/y.safetensors")
    assert f.filename_list("checkpoints") == ["x.safetensors", "y.safetensors"]
    paths = f.folder_paths()
    assert paths["checkpoints"][0] == str(tmp_path / "preferred/ckpts")
    assert all(isinstance(p, str) for dirs in paths.values() for p in dirs)


def test_home_expansion_and_default_yaml_in_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    touch(tmp_path / "base/extra_model_paths.yaml", b"s:\n  base_path: ~/m\n  vae: v\n")
    assert Folders(tmp_path / "base").paths("vae")[-1] == tmp_path / "home/m/v"


def test_bad_yaml_is_a_clear_error(tmp_path: Path) -> None:
    bad = touch(tmp_path / "bad.yaml", b"a: [unclosed\n")
    with pytest.raises(FolderConfigError, match=r"bad\.yaml"):
        Folders(tmp_path, extra_config_paths=[bad])
    wrong = touch(tmp_path / "wrong.yaml", b"- a\n- b\n")
    with pytest.raises(FolderConfigError, match="mapping"):
        Folders(tmp_path, extra_config_paths=[wrong])
    with pytest.raises(FolderConfigError):
        Folders(tmp_path, extra_config_paths=[tmp_path / "missing.yaml"])
    empty = touch(tmp_path / "empty.yaml", b"")
    assert Folders(tmp_path, extra_config_paths=[empty]).paths("vae") == Folders(tmp_path).paths("vae")


def test_add_path_default_moves_to_front(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    f.add_path("vae", tmp_path / "extra")
    f.add_path("vae", tmp_path / "extra")
    assert f.paths("vae").count(tmp_path / "extra") == 1 and f.paths("vae")[-1] == tmp_path / "extra"
    f.add_path("vae", tmp_path / "extra", is_default=True)
    assert f.paths("vae")[0] == tmp_path / "extra" and f.paths("vae").count(tmp_path / "extra") == 1


def test_input_files_lists_images_at_top_level(tmp_path: Path) -> None:
    f = Folders(tmp_path)
    assert f.input_files() == []
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", "sub/d.png"):
        touch(tmp_path / "input" / name)
    assert f.input_files() == ["a.JPG", "b.png", "c.webp"]
    assert f.input_files(()) == ["a.JPG", "b.png", "c.webp", "notes.txt"]
    with pytest.raises(KeyError):
        f.directory("models")
