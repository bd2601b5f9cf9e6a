"""GLIGEN text boxes: a position net and gated self-attention layers added to an SD UNet.

A GLIGEN file (ComfyUI's ``models/gligen``) holds ``position_net.*`` (the box + phrase
encoder: Fourier features of each box, the phrase's pooled CLIP output, an MLP to the
cross-attention width) and one ``fuser`` per UNet transformer block under its LDM name
(``input_blocks.1.1.transformer_blocks.0.fuser.*``, ``middle_block.1...``, ``output_blocks...``).

At sampling, the conditioning entry's ``"gligen"`` option, ComfyUI's
``("position", gligen, [(pooled, h, w, y, x), ...])`` with boxes in latent pixels, becomes
up to :data:`MAX_OBJECTS` object tokens; inside each transformer block, after its
self-attention, the block's fuser attends over the visual tokens plus the objects and adds
its result through the learnt tanh gates (``alpha_attn``, ``alpha_dense``). Gates at zero
leave the UNet's output bit for bit as it was. The fusers are hooks around the shared
diffusers module for one call only (:func:`gligen_hooks`); the module is never modified.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

from diffusion import convert
from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build

#: Objects (boxes) one GLIGEN conditioning can hold.
MAX_OBJECTS = 30
#: Fourier frequencies per box coordinate (8 in every published GLIGEN model).
FOURIER_FREQS = 8
#: Cross-attention width for which ComfyUI uses 8 heads (SD1.x); other widths use 64-wide heads.
SD1_CONTEXT = 768
#: The gate value a synthetic file gets.
GATE = 1.0
_FUSER = re.compile(r"((?:input_blocks|output_blocks)\.\d+|middle_block)\.1\.transformer_blocks\.(\d+)\.fuser\.(.+)")

Position = tuple[torch.Tensor, int, int, int, int]  # (pooled [1, D], h, w, y, x), latent pixels


@dataclass
class Gligen:
    """A loaded GLIGEN model: the position net and the fusers by transformer block name."""

    position_net: GLIGENTextBoundingboxProjection
    fusers: dict[str, GatedSelfAttentionDense]  # "input_blocks.1.1.transformer_blocks.0" -> fuser
    phrase_width: int                          # pooled CLIP width it takes (768 for SD1.x)
    name: str = "gligen"

    def objects(self, positions: Sequence[Position], batch: int, height: int, width: int) -> torch.Tensor:
        """The object tokens ``[batch, 30, context]`` for boxes on a ``height`` x ``width`` latent."""
        if len(positions) > MAX_OBJECTS:
            raise ValueError(f"GLIGEN takes at most {MAX_OBJECTS} boxes per conditioning, got {len(positions)}")
        net = self.position_net
        param = net.null_positive_feature
        boxes = torch.zeros((MAX_OBJECTS, 4))
        masks = torch.zeros((MAX_OBJECTS,))
        phrases = torch.zeros((MAX_OBJECTS, self.phrase_width))
        for i, (pooled, h, w, y, x) in enumerate(positions):
            boxes[i] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
            masks[i] = 1.0
            phrases[i] = pooled.reshape(-1).float().cpu()
        with torch.no_grad():
            objs = net(boxes[None].repeat(batch, 1, 1).to(param), masks[None].repeat(batch, 1).to(param),
                       positive_embeddings=phrases[None].repeat(batch, 1, 1).to(param))
        return objs

    def check_unet(self, names: dict[str, int]) -> None:
        """Refuse a UNet whose transformer blocks (name -> width) are not the ones this file patches."""
        for block, dim in names.items():
            fuser = self.fusers.get(block)
            if fuser is None or fuser.linear.out_features != dim:
                raise ValueError(f"{self.name}: a GLIGEN model for another architecture (it has no {dim}-wide "
                                 f"fuser for {block}); use one made for this checkpoint")


def _fuser_heads(query_dim: int, context_dim: int) -> tuple[int, int]:
    """(heads, head width) as ComfyUI derives them; widths under 64 get one head."""
    if context_dim == SD1_CONTEXT:
        return 8, query_dim // 8
    heads = max(1, query_dim // 64)
    return heads, query_dim // heads


def build_gligen(shapes: dict[str, tuple[int, ...]]) -> Gligen:
    """An empty-shaped :class:`Gligen` (meta device) for a file's tensor shapes."""
    phrase_width = shapes["position_net.null_positive_feature"][0]
    out_dim = shapes["position_net.linears.4.weight"][0]
    fusers: dict[str, GatedSelfAttentionDense] = {}
    for key, shape in shapes.items():
        m = _FUSER.fullmatch(key)
        if m and m[3] == "linear.weight":
            query_dim, context_dim = shape
            heads, head_dim = _fuser_heads(query_dim, context_dim)
            fusers[f"{m[1]}.1.transformer_blocks.{m[2]}"] = GatedSelfAttentionDense(query_dim, context_dim,
                                                                                    heads, head_dim)
    net = GLIGENTextBoundingboxProjection(phrase_width, out_dim, "text-only", FOURIER_FREQS)
    return Gligen(net, fusers, phrase_width)


class _Modules(torch.nn.Module):
    """The file's layout as one module, for loading: ``position_net`` plus the fusers by LDM name."""

    def __init__(self, gligen: Gligen) -> None:
        super().__init__()
        self.position_net = gligen.position_net
        self.blocks = torch.nn.ModuleDict({name.replace(".", "|"): f for name, f in gligen.fusers.items()})


def _module_key(key: str) -> str | None:
    """A file key's name in :class:`_Modules` (None for keys that are not GLIGEN's)."""
    if key.startswith("position_net."):
        return key
    if m := _FUSER.fullmatch(key):
        return f"blocks.{m[1].replace('.', '|')}|1|transformer_blocks|{m[2]}.{m[3]}"
    return None


def _file_key(key: str) -> str:
    """A :class:`_Modules` key's name in the file."""
    if key.startswith("position_net."):
        return key
    block, _, rest = key.removeprefix("blocks.").partition(".")
    return f"{block.replace('|', '.')}.fuser.{rest}"


def load_gligen(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> Gligen:
    """Load a GLIGEN file; :class:`CheckpointError` with a one-line reason for any other file."""
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        shapes, name = file.shapes, file.path.name
        if "position_net.null_positive_feature" not in shapes or not any(_FUSER.fullmatch(k) for k in shapes):
            raise CheckpointError(f"{name}: not a GLIGEN model (no position_net and fuser layers)")
        if "position_net.linears.4.weight" not in shapes:
            raise CheckpointError(f"{name}: only text-box GLIGEN models are read (no position_net.linears.4)")
        state = {m: v for k, v in file.read("", dtype).items() if (m := _module_key(k)) is not None}
        built: list[Gligen] = []

        def factory() -> _Modules:
            built.append(build_gligen(shapes))
            return _Modules(built[0])

        _build(factory, state, "GLIGEN", name)
        gligen = built[0]
        gligen = Gligen(gligen.position_net.to(device), {k: f.to(device) for k, f in gligen.fusers.items()},
                        gligen.phrase_width, name)
        return gligen


def transformer_blocks(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """A diffusers UNet's transformer blocks by their LDM name (``input_blocks.1.1.transformer_blocks.0``)."""
    config = dict(unet.config)
    suffix = ".attn1.to_q.weight"
    keys = [k for k, _ in unet.named_parameters() if k.endswith(suffix) and ".transformer_blocks." in k]
    names = convert.unet_ldm_names(keys, config)
    return {names[k][: -len(suffix)]: unet.get_submodule(k[: -len(suffix)]) for k in keys}


@contextmanager
def gligen_hooks(unet: torch.nn.Module, gligen_option: Any, shape: Sequence[int]) -> Iterator[None]:
    """Run the fusers of a conditioning's ``("position", Gligen, positions)`` inside ``unet`` while in the block.

    ``shape`` is the latent input's [B, C, H, W] (the boxes are in its latent pixels).
    None (no GLIGEN on the entry) does nothing.
    """
    if gligen_option is None:
        yield
        return
    _, gligen, positions = gligen_option
    blocks = transformer_blocks(unet)
    gligen.check_unet({name: int(block.attn1.to_q.weight.shape[0]) for name, block in blocks.items()})
    batch, _, height, width = shape
    objs = gligen.objects(positions, int(batch), int(height), int(width))
    handles = []
    try:
        for name, block in blocks.items():
            seen: dict[str, torch.Tensor] = {}
            handles.append(block.register_forward_pre_hook(_remember(seen), with_kwargs=True))
            handles.append(block.attn1.register_forward_hook(_fuse(gligen.fusers[name], seen, objs)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _remember(seen: dict[str, torch.Tensor]) -> Any:
    def hook(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["x"] = args[0] if args else kwargs["hidden_states"]
    return hook


def _fuse(fuser: GatedSelfAttentionDense, seen: dict[str, torch.Tensor], objs: torch.Tensor) -> Any:
    """attn1's output plus what the fuser adds to the block's hidden state after self-attention."""
    def hook(_module: torch.nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        hidden = output + seen["x"]
        param = fuser.alpha_attn
        with torch.no_grad():
            tokens = objs.to(param).repeat(hidden.shape[0] // objs.shape[0], 1, 1)
            fused = fuser(hidden.to(param), tokens).to(hidden.dtype)
        return output + (fused - hidden)
    return hook


def write_gligen(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                 arch: str | None = None, size: str = "tiny") -> Path:
    """A seeded random text-box GLIGEN file for ``base``'s UNet, in the published key layout.

    The gates are set to :data:`GATE` (a trained model's are learnt; zero would be a no-op).
    """
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from diffusion.control.synthetic import _base_unet_config, _write
    from diffusion.synthetic import _random_tensor

    _, config = _base_unet_config(base, "GLIGEN model")
    with init_empty_weights():
        unet = UNet2DConditionModel(**config)
    context = int(config["cross_attention_dim"])
    shapes: dict[str, tuple[int, ...]] = {
        "position_net.null_positive_feature": (context,),
        "position_net.linears.4.weight": (context, 512),
    }
    for name, block in transformer_blocks(unet).items():
        shapes[f"{name}.fuser.linear.weight"] = (int(block.attn1.to_q.weight.shape[0]), context)
    with init_empty_weights():
        modules = _Modules(build_gligen(shapes))
    state = {}
    for key, param in sorted(modules.state_dict().items()):
        if key.endswith(("alpha_attn", "alpha_dense")):
            state[key] = torch.tensor(GATE)  # tanh(1) ~ 0.76: the boxes visibly steer a sample
        else:
            state[key] = _random_tensor(f"gligen.{key}", tuple(param.shape), seed)
    return _write(out, {_file_key(k): v for k, v in state.items()}, "gligen", seed)
