"""PhotoMakerLoader and PhotoMakerEncode: the v1 file layout, the fuse, and which conditioning rows change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusion.checkpoint import CheckpointError, load_checkpoint
from diffusion.photomaker import FuseModule, PhotoMaker, load_photomaker, trigger_word_id, write_photomaker
from diffusion.synthetic import write_checkpoint
from nodes.api import Services
from nodes.folders import Folders
from nodes.model_tools import make_model
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Ctx:
    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photomaker")
    xl = write_checkpoint(root / "xl.safetensors", "sdxl", "tiny", 0, torch.float32)
    write_photomaker(root / "models" / "photomaker" / "photomaker-v1.bin", base=xl, seed=1)
    return root


@pytest.fixture(scope="module")
def registry(root: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(root), precision="fp32"))


@pytest.fixture(scope="module")
def clip(root: Path) -> object:
    return load_checkpoint(root / "xl.safetensors", precision="fp32").clip


@pytest.fixture(scope="module")
def photomaker(registry: NodeRegistry) -> PhotoMaker:
    (loaded,) = registry["PhotoMakerLoader"].behaviour.execute(
        None, _Ctx(), {"photomaker_model_name": "photomaker-v1.bin"})
    return loaded


def _encode(registry: NodeRegistry, node: str, **inputs: object) -> list[list[object]]:
    (conditioning,) = registry[node].behaviour.execute(None, _Ctx(), inputs)
    return conditioning


def test_writer_is_seeded_and_in_the_released_layout(root: Path, tmp_path: Path) -> None:
    xl = root / "xl.safetensors"
    first = write_photomaker(tmp_path / "a.bin", base=xl, seed=1)
    again = write_photomaker(tmp_path / "b.bin", base=xl, seed=1)
    other = write_photomaker(tmp_path / "c.bin", base=xl, seed=2)
    released = root / "models" / "photomaker" / "photomaker-v1.bin"
    assert first.read_bytes() == again.read_bytes() == released.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert make_model("photomaker", tmp_path / "cli.bin", base=xl, seed=1).read_bytes() == first.read_bytes()
    data = torch.load(first, weights_only=True)
    assert set(data) == {"id_encoder", "lora_weights"}
    ids = data["id_encoder"]
    # The tiny SDXL's clip_l and clip_g are 64 wide: the two projections add up to its 128-wide context.
    assert ids["visual_projection.weight"].shape == (64, 64) and ids["visual_projection_2.weight"].shape == (64, 64)
    assert ids["fuse_module.mlp1.fc1.weight"].shape == (128, 256) and "fuse_module.layer_norm.weight" in ids
    assert ids["vision_model.embeddings.patch_embedding.weight"].shape == (64, 3, 14, 14)
    assert data["lora_weights"] and all(k.startswith("unet.") for k in data["lora_weights"])
    with pytest.raises(ValueError, match="made for SDXL"):
        write_photomaker(tmp_path / "sd1.bin", base=write_checkpoint(tmp_path / "sd1.safetensors", "sd15", "tiny", 0))


def test_loader_reads_the_file_once(registry: NodeRegistry, photomaker: PhotoMaker) -> None:
    (again,) = registry["PhotoMakerLoader"].behaviour.execute(
        None, _Ctx(), {"photomaker_model_name": "photomaker-v1.bin"})
    assert again is photomaker and registry.services.models.loads == 1
    assert photomaker.width == 128 and photomaker.vision.image_size == 56


def test_a_flat_safetensors_file_loads_the_same(root: Path, tmp_path: Path, photomaker: PhotoMaker) -> None:
    from diffusion.synthetic import save_safetensors

    ids = torch.load(root / "models" / "photomaker" / "photomaker-v1.bin", weights_only=True)["id_encoder"]
    save_safetensors({"id_encoder." + k: v for k, v in ids.items()}, tmp_path / "pm.safetensors", {})
    flat = load_photomaker(tmp_path / "pm.safetensors", precision="fp32")
    image = torch.rand(1, 56, 56, 3)
    assert torch.equal(flat.id_embeds(image), photomaker.id_embeds(image))


def test_fuse_by_hand_equals_the_module() -> None:
    torch.manual_seed(0)
    fuse = FuseModule(8)
    for p in fuse.parameters():
        p.data.normal_()
    row, ids = torch.randn(3, 8), torch.randn(3, 8)

    def mlp(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = F.layer_norm(x, x.shape[-1:], m.layernorm.weight, m.layernorm.bias)
        return F.linear(F.gelu(F.linear(h, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)

    x = mlp(fuse.mlp1, torch.cat([row, ids], dim=-1)) + row
    x = mlp(fuse.mlp2, x) + x
    expected = F.layer_norm(x, (8,), fuse.layer_norm.weight, fuse.layer_norm.bias)
    assert torch.allclose(fuse(row, ids), expected, atol=1e-5)


def test_trigger_fuses_only_the_class_token(registry: NodeRegistry, photomaker: PhotoMaker, clip: object) -> None:
    image = torch.rand(1, 64, 48, 3)
    text = "a photo of a man photomaker"
    ((cond, options),) = _encode(registry, "PhotoMakerEncode", photomaker=photomaker, image=image, clip=clip,
                                 text=text)
    ((plain, plain_options),) = _encode(registry, "CLIPTextEncode", text=text, clip=clip)
    # ComfyUI's word ids number weighted segments: in a plain prompt the trigger's tokens stay.
    assert cond.shape == plain.shape == (1, 77, 128)
    assert torch.equal(options["pooled_output"], plain_options["pooled_output"]) and set(options) == {"pooled_output"}
    changed = (cond != plain).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [5]  # BOS, a, photo, of, a, man: the class word's row
    expected = photomaker.fuse(plain[0, 5:6], photomaker.id_embeds(image))
    assert torch.allclose(cond[0, 5], expected[0], atol=1e-6)
    # Only the first image of a batch counts, as in ComfyUI.
    ((batch, _),) = _encode(registry, "PhotoMakerEncode", photomaker=photomaker, clip=clip,
                            image=torch.cat([image, torch.rand(2, 64, 48, 3)]), text=text)
    assert torch.equal(batch, cond)


def test_trigger_word_ids_follow_comfyui(registry: NodeRegistry, photomaker: PhotoMaker, clip: object) -> None:
    image = torch.rand(1, 56, 56, 3)
    # The trigger as the first word is word id 1: the whole first segment's tokens go, as in ComfyUI.
    ((cond, _),) = _encode(registry, "PhotoMakerEncode", photomaker=photomaker, image=image, clip=clip,
                           text="photomaker a man")
    ((empty, _),) = _encode(registry, "CLIPTextEncode", text="", clip=clip)
    assert torch.equal(cond[0, 1:], empty[0, 1:])  # row 0 (BOS) is the fused one
    # Weighted segments are word ids: "a ", "man" (1.2), " photomaker" are 1, 2, 3, and the trigger is the
    # third space-separated word, so its segment goes; row 2 (BOS, a, man) is fused.
    ((weighted, _),) = _encode(registry, "PhotoMakerEncode", photomaker=photomaker, image=image, clip=clip,
                               text="a (man:1.2) photomaker")
    ((without, _),) = _encode(registry, "CLIPTextEncode", text="a (man:1.2)", clip=clip)
    changed = (weighted != without).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [2]
    assert trigger_word_id("photograph of photomaker") == 3 and trigger_word_id("no trigger here") is None


def test_without_the_trigger_word_it_is_plain_text_encoding(registry: NodeRegistry, photomaker: PhotoMaker,
                                                            clip: object) -> None:
    image = torch.rand(1, 56, 56, 3)
    for text in ("a photo of a man", "a photo of a man photomaker,"):  # only the bare word is the trigger
        ((cond, options),) = _encode(registry, "PhotoMakerEncode", photomaker=photomaker, image=image, clip=clip,
                                     text=text)
        ((plain, plain_options),) = _encode(registry, "CLIPTextEncode", text=text, clip=clip)
        assert torch.equal(cond, plain) and torch.equal(options["pooled_output"], plain_options["pooled_output"])


def test_bad_files_and_a_clip_of_another_width_are_one_line_errors(
        root: Path, tmp_path: Path, registry: NodeRegistry, photomaker: PhotoMaker, tiny_sd15_path: Path) -> None:
    torch.save({"id_encoder": {"vision_model.x": torch.zeros(1)}}, tmp_path / "odd.bin")
    torch.save([torch.zeros(1)], tmp_path / "list.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a pickle")
    for name, match in (("odd.bin", "not a PhotoMaker file"), ("list.bin", "holds no state dict"),
                        ("junk.bin", "junk.bin: ")):
        with pytest.raises(CheckpointError, match=match) as error:
            load_photomaker(tmp_path / name)
        assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="not a PhotoMaker file"):
        load_photomaker(root / "xl.safetensors")
    sd15_clip = load_checkpoint(tiny_sd15_path, precision="fp32").clip
    with pytest.raises(ValueError, match="PhotoMakerEncode: the PhotoMaker ID embeddings are 128 wide") as error:
        _encode(registry, "PhotoMakerEncode", photomaker=photomaker, image=torch.rand(1, 56, 56, 3),
                clip=sd15_clip, text="a photo of a man photomaker")
    assert "\n" not in str(error.value)
