"""Model merging nodes: MODEL and CLIP weights mixed as patches on the first model (``diffusion.merge``).

Nothing is copied when a merge node runs: the merged model is the first model's base plus
one patch per weight that reads the second model's (patched) weight when the merge is used.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Clip, Model, Range, node

Ratio = Annotated[float, Range(0.0, 1.0, step=0.01)]
Multiplier = Annotated[float, Range(-10.0, 10.0, step=0.01)]

_CATEGORY = "advanced/model_merging"
_SD_BLOCKS = ("time_embed.", "label_emb.", *(f"input_blocks.{i}." for i in range(12)),
              *(f"middle_block.{i}." for i in range(3)), *(f"output_blocks.{i}." for i in range(12)), "out.")
_SDXL_BLOCKS = ("time_embed.", "label_emb.", *(f"input_blocks.{i}" for i in range(9)),
                *(f"middle_block.{i}" for i in range(3)), *(f"output_blocks.{i}" for i in range(9)), "out.")
_FLUX_BLOCKS = ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.",
                *(f"double_blocks.{i}." for i in range(19)), *(f"single_blocks.{i}." for i in range(38)),
                "final_layer.")


def _sd3_blocks(depth: int) -> tuple[str, ...]:
    """The block prefixes of ComfyUI's SD3 merge nodes for an MMDiT of ``depth`` joint blocks."""
    return ("pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.",
            *(f"joint_blocks.{i}." for i in range(depth)), "final_layer.")


def _merge(model1: Any, model2: Any, strengths: Any) -> Any:
    """UNets merge by LDM key names, SD3/Flux transformers by their original key names."""
    from diffusion.merge import merge_models, merge_transformers

    if getattr(model1, "family", None) is not None or getattr(model2, "family", None) is not None:
        return merge_transformers(model1, model2, strengths)
    return merge_models(model1, model2, strengths)


def _merge_by_blocks(model1: Any, model2: Any, ratios: dict[str, float]) -> Any:
    from diffusion.merge import block_ratios

    return _merge(model1, model2, block_ratios(ratios))


@node(category=_CATEGORY)
def ModelMergeSimple(model1: Model, model2: Model, ratio: Ratio = 1.0) -> Model:
    """Blends two models: ``ratio`` of the first model's weights and ``1 - ratio`` of the second's."""
    return _merge_by_blocks(model1, model2, {"": ratio})


@node(category=_CATEGORY)
def ModelMergeBlocks(model1: Model, model2: Model, input: Ratio = 1.0, middle: Ratio = 1.0,
                     out: Ratio = 1.0) -> Model:
    """Blends two models with one ratio for the input blocks, one for the middle and one for the output blocks."""
    return _merge_by_blocks(model1, model2, {"input": input, "middle": middle, "out": out})


@node(category=_CATEGORY)
def ModelMergeAdd(model1: Model, model2: Model) -> Model:
    """Adds the second model's weights to the first's."""
    return _merge(model1, model2, lambda _key: (1.0, 1.0))


@node(category=_CATEGORY)
def ModelMergeSubtract(model1: Model, model2: Model, multiplier: Multiplier = 1.0) -> Model:
    """``multiplier * (model1 - model2)``: the difference of two models, e.g. to extract what a fine-tune added."""
    return _merge(model1, model2, lambda _key: (-multiplier, multiplier))


def _block_merge_node(name: str, blocks: tuple[str, ...], doc: str) -> Any:
    def merge(model1: Any, model2: Any, **ratios: float) -> Any:
        return _merge_by_blocks(model1, model2, {block: float(ratios[block]) for block in blocks})

    merge.__name__ = merge.__qualname__ = name
    merge.__doc__ = doc
    merge.__annotations__ = {"model1": Model, "model2": Model, "ratios": float, "return": Model}
    merge.__module__ = __name__
    return node(name, category=f"{_CATEGORY}/model_specific",
                extra_inputs=[(block, Ratio, 1.0) for block in blocks])(merge)


ModelMergeSD1 = _block_merge_node(
    "ModelMergeSD1", _SD_BLOCKS, "Blends two SD1.x models block by block: each input is the first model's share.")
ModelMergeSD2 = _block_merge_node(
    "ModelMergeSD2", _SD_BLOCKS, "Blends two SD2.x models block by block: each input is the first model's share.")
ModelMergeSDXL = _block_merge_node(
    "ModelMergeSDXL", _SDXL_BLOCKS, "Blends two SDXL models block by block: each input is the first model's share.")

ModelMergeSD3_2B = _block_merge_node(
    "ModelMergeSD3_2B", _sd3_blocks(24),
    "Blends two SD3 medium models block by block: each input is the first model's share.")
ModelMergeSD35_Large = _block_merge_node(
    "ModelMergeSD35_Large", _sd3_blocks(38),
    "Blends two SD3.5 large models block by block: each input is the first model's share.")
ModelMergeFlux1 = _block_merge_node(
    "ModelMergeFlux1", _FLUX_BLOCKS,
    "Blends two Flux.1 models block by block: each input is the first model's share.")


@node(category=_CATEGORY)
def CLIPMergeSimple(clip1: Clip, clip2: Clip, ratio: Ratio = 1.0) -> Clip:
    """Blends two text encoders: ``ratio`` of the first one's weights and ``1 - ratio`` of the second's."""
    from diffusion.merge import merge_clips

    return merge_clips(clip1, clip2, 1.0 - ratio, ratio)


@node(category=_CATEGORY)
def CLIPMergeAdd(clip1: Clip, clip2: Clip) -> Clip:
    """Adds the second text encoder's weights to the first's."""
    from diffusion.merge import merge_clips

    return merge_clips(clip1, clip2, 1.0, 1.0)


@node(category=_CATEGORY)
def CLIPMergeSubtract(clip1: Clip, clip2: Clip, multiplier: Multiplier = 1.0) -> Clip:
    """``multiplier * (clip1 - clip2)`` on the text encoders' weights."""
    from diffusion.merge import merge_clips

    return merge_clips(clip1, clip2, -multiplier, multiplier)
