"""``/object_info`` entries: the shape of PROTOCOL.md 4.3, from a declaration and from a V1 class alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry
from nodes.api import REQUIRED, Conditioning, Latent, Model, OneOf, Range, Seed, Services, Tooltip, node
from nodes.compat import adapt_class
from nodes.folders import Folders
from nodes.object_info import node_info, object_info

SAMPLERS = ("euler", "euler_cfg_pp", "euler_ancestral")
SCHEDULERS = ("simple", "sgm_uniform", "karras")


@node(category="sampling")
def KSampler(
    model: Annotated[Model, Tooltip("The model used for denoising the input latent.")],
    seed: Annotated[int, Seed(), Tooltip("The random seed used for creating the noise.")],
    steps: Annotated[int, Range(1, 10_000), Tooltip("The number of steps.")] = 20,
    cfg: Annotated[float, Range(0.0, 100.0, step=0.1, round=0.01), Tooltip("The CFG scale.")] = 8.0,
    sampler_name: Annotated[str, OneOf(SAMPLERS), Tooltip("The algorithm.")] = REQUIRED,
    scheduler: Annotated[str, OneOf(SCHEDULERS), Tooltip("The scheduler.")] = REQUIRED,
    positive: Annotated[Conditioning, Tooltip("What to include.")] = REQUIRED,
    negative: Annotated[Conditioning, Tooltip("What to exclude.")] = REQUIRED,
    latent_image: Annotated[Latent, Tooltip("The latent image to denoise.")] = REQUIRED,
    denoise: Annotated[float, Range(0.0, 1.0, step=0.01), Tooltip("The amount of denoising.")] = 1.0,
) -> Annotated[Latent, Tooltip("The denoised latent.")]:
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""
    return latent_image


EXPECTED_KSAMPLER = {
    "input": {"required": {
        "model": ["MODEL", {"tooltip": "The model used for denoising the input latent."}],
        "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615, "control_after_generate": True,
                         "tooltip": "The random seed used for creating the noise."}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps."}],
        "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "The CFG scale."}],
        "sampler_name": [list(SAMPLERS), {"tooltip": "The algorithm."}],
        "scheduler": [list(SCHEDULERS), {"tooltip": "The scheduler."}],
        "positive": ["CONDITIONING", {"tooltip": "What to include."}],
        "negative": ["CONDITIONING", {"tooltip": "What to exclude."}],
        "latent_image": ["LATENT", {"tooltip": "The latent image to denoise."}],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "The amount of denoising."}]}},
    "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                 "negative", "latent_image", "denoise"]},
    "output": ["LATENT"], "output_is_list": [False], "output_name": ["LATENT"],
    "name": "KSampler", "display_name": "KSampler",
    "description": "Uses the provided model, positive and negative conditioning to denoise the latent image.",
    "python_module": "nodes", "category": "sampling", "output_node": False,
    "output_tooltips": ["The denoised latent."],
}


class KSamplerV1:
    """The same node written as a ComfyUI V1 class."""

    DESCRIPTION = EXPECTED_KSAMPLER["description"]
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"
    CATEGORY = "sampling"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {name: tuple(spec) for name, spec in EXPECTED_KSAMPLER["input"]["required"].items()}}

    def sample(self, **kwargs):
        return (kwargs["latent_image"],)


def _services(tmp_path: Path) -> Services:
    return Services(folders=Folders(tmp_path))


def test_declared_ksampler_matches_the_comfyui_shape(tmp_path: Path) -> None:
    info = node_info(KSampler.schema(_services(tmp_path)))
    assert info == EXPECTED_KSAMPLER
    # Key order of the entry matches ComfyUI's too (clients diff JSON text).
    assert list(info) == list(EXPECTED_KSAMPLER)
    assert list(info["input"]["required"]["seed"][1]) == ["default", "min", "max", "control_after_generate",
                                                          "tooltip"]
    json.dumps(info)  # plain JSON


def test_v1_class_gives_the_same_entry() -> None:
    info = node_info(adapt_class("KSampler", KSamplerV1, python_module="nodes"))
    assert info == EXPECTED_KSAMPLER


def test_hidden_entries_are_bare_strings_and_optional_keys_absent() -> None:
    schema = NodeSchema(
        name="Saver",
        inputs=(InputSpec("images", "IMAGE"), InputSpec("filename_prefix", "STRING", options={"default": "ComfyUI"}),
                InputSpec("prompt", "PROMPT", "hidden"), InputSpec("extra_pnginfo", "EXTRA_PNGINFO", "hidden")),
        outputs=(),
        behaviour=NodeBehaviour(execute=lambda instance, ctx, inputs: {}),
        category="image", output_node=True,
    )
    info = node_info(schema)
    assert info["input"] == {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                             "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}
    assert info["output"] == [] and info["output_node"] is True
    assert info["display_name"] == "Saver" and info["description"] == ""
    for absent in ("output_tooltips", "deprecated", "experimental", "api_node"):
        assert absent not in info


def test_new_style_combo_and_listed_output() -> None:
    schema = NodeSchema(
        name="Pick",
        inputs=(InputSpec("mode", "COMBO", options={"options": ["a", "b"], "default": "b"}, legacy_combo=False),),
        outputs=(OutputSpec("STRING", "picked", is_list=True),),
        behaviour=NodeBehaviour(execute=lambda instance, ctx, inputs: (["a"],)),
    )
    info = node_info(schema)
    assert info["input"]["required"]["mode"] == ["COMBO", {"options": ["a", "b"], "default": "b"}]
    assert info["output_is_list"] == [True] and info["output_name"] == ["picked"]
    assert info["category"] == "sd"


def test_object_info_skips_a_node_whose_inputs_cannot_be_read(tmp_path: Path) -> None:
    def broken() -> tuple[InputSpec, ...]:
        raise RuntimeError("INPUT_TYPES failed")

    bad = NodeSchema(name="Bad", inputs=(), outputs=(), dynamic_inputs=broken,
                     behaviour=NodeBehaviour(execute=lambda instance, ctx, inputs: ()))
    registry = Registry({"Bad": bad, "KSampler": KSampler.schema(_services(tmp_path))})
    assert list(object_info(registry)) == ["KSampler"]
