"""Shared fixtures for graph tests: a toy registry whose schemas mirror ComfyUI's core nodes.

The input names, order, sections and options below are ComfyUI's (``nodes.py``,
``comfy_extras/nodes_primitive.py``, ``nodes_string.py``, ``nodes_preview_any.py``,
``nodes_upscale_model.py``), so workflow conversion and validation tests exercise the
real widget layouts without importing ``nodes/``. Behaviours are dummies.
Coordinate by adding fixtures; do not change existing schemas.
"""

from __future__ import annotations

from typing import Any

import pytest

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry

SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors", "v1-5-pruned-emaonly-fp16.safetensors"]
LORAS = ["detail_tweaker.safetensors", "film_grain.safetensors"]
CONTROLNETS = ["control_v11p_sd15_canny.safetensors"]
UPSCALE_MODELS = ["4x-UltraSharp.pth", "RealESRGAN_x2.pth"]
INPUT_IMAGES = ["example.png", "mask.png", "portrait.jpg"]
MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF
SYS_MAXSIZE = 2**63 - 1


def _dummy(instance: Any, ctx: Any, inputs: dict[str, Any]) -> tuple[()]:
    return ()


def _in(name: str, type_: str, section: str = "required", **options: Any) -> InputSpec:
    return InputSpec(name, type_, section, options)  # type: ignore[arg-type]


def _combo(name: str, choices: list[str], section: str = "required", **options: Any) -> InputSpec:
    return InputSpec(name, "COMBO", section, options, choices=tuple(choices))  # type: ignore[arg-type]


def _node(
    name: str, inputs: list[InputSpec], outputs: list[str], display: str = "", output_node: bool = False, **kw: Any
) -> NodeSchema:
    outs = tuple(OutputSpec(t, t) for t in outputs)
    return NodeSchema(name, tuple(inputs), outs, NodeBehaviour(_dummy), display or name, output_node=output_node, **kw)


def _sampling_inputs() -> dict[str, InputSpec]:
    return {
        "steps": _in("steps", "INT", default=20, min=1, max=10000),
        "cfg": _in("cfg", "FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        "sampler_name": _combo("sampler_name", SAMPLERS),
        "scheduler": _combo("scheduler", SCHEDULERS),
    }


def _hidden_png() -> list[InputSpec]:
    return [_in("prompt", "PROMPT", "hidden"), _in("extra_pnginfo", "EXTRA_PNGINFO", "hidden")]


def build_toy_registry() -> Registry:
    """The toy registry (a fresh one each call, so a test may add to it)."""
    s = _sampling_inputs()
    size = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
    scale_size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
    schemas = [
        _node(
            "CheckpointLoaderSimple", [_combo("ckpt_name", CHECKPOINTS)], ["MODEL", "CLIP", "VAE"], "Load Checkpoint"
        ),
        _node(
            "CLIPTextEncode",
            [_in("text", "STRING", multiline=True, dynamicPrompts=True), _in("clip", "CLIP")],
            ["CONDITIONING"],
            "CLIP Text Encode (Prompt)",
        ),
        _node(
            "CLIPSetLastLayer",
            [_in("clip", "CLIP"), _in("stop_at_clip_layer", "INT", default=-1, min=-24, max=-1, step=1)],
            ["CLIP"],
            "CLIP Set Last Layer",
        ),
        _node(
            "EmptyLatentImage",
            [
                _in("width", "INT", **size),
                _in("height", "INT", **size),
                _in("batch_size", "INT", default=1, min=1, max=4096),
            ],
            ["LATENT"],
            "Empty Latent Image",
        ),
        _node(
            "KSampler",
            [
                _in("model", "MODEL"),
                _in("seed", "INT", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                s["steps"],
                s["cfg"],
                s["sampler_name"],
                s["scheduler"],
                _in("positive", "CONDITIONING"),
                _in("negative", "CONDITIONING"),
                _in("latent_image", "LATENT"),
                _in("denoise", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.01),
            ],
            ["LATENT"],
        ),
        _node(
            "KSamplerAdvanced",
            [
                _in("model", "MODEL"),
                _combo("add_noise", ["enable", "disable"]),
                _in("noise_seed", "INT", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                s["steps"],
                s["cfg"],
                s["sampler_name"],
                s["scheduler"],
                _in("positive", "CONDITIONING"),
                _in("negative", "CONDITIONING"),
                _in("latent_image", "LATENT"),
                _in("start_at_step", "INT", default=0, min=0, max=10000),
                _in("end_at_step", "INT", default=10000, min=0, max=10000),
                _combo("return_with_leftover_noise", ["disable", "enable"]),
            ],
            ["LATENT"],
            "KSampler (Advanced)",
        ),
        _node("VAEDecode", [_in("samples", "LATENT"), _in("vae", "VAE")], ["IMAGE"], "VAE Decode"),
        _node("VAEEncode", [_in("pixels", "IMAGE"), _in("vae", "VAE")], ["LATENT"], "VAE Encode"),
        _node(
            "SaveImage",
            [_in("images", "IMAGE"), _in("filename_prefix", "STRING", default="ComfyUI"), *_hidden_png()],
            [],
            "Save Image",
            output_node=True,
        ),
        _node("PreviewImage", [_in("images", "IMAGE"), *_hidden_png()], [], "Preview Image", output_node=True),
        _node("LoadImage", [_combo("image", INPUT_IMAGES, image_upload=True)], ["IMAGE", "MASK"], "Load Image"),
        _node(
            "LoadImageMask",
            [_combo("image", INPUT_IMAGES, image_upload=True), _combo("channel", ["alpha", "red", "green", "blue"])],
            ["MASK"],
            "Load Image (as Mask)",
        ),
        _node(
            "SetLatentNoiseMask", [_in("samples", "LATENT"), _in("mask", "MASK")], ["LATENT"], "Set Latent Noise Mask"
        ),
        _node(
            "LatentUpscale",
            [
                _in("samples", "LATENT"),
                _combo("upscale_method", ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]),
                _in("width", "INT", **{**scale_size, "step": 8}),
                _in("height", "INT", **{**scale_size, "step": 8}),
                _combo("crop", ["disabled", "center"]),
            ],
            ["LATENT"],
            "Upscale Latent",
        ),
        _node(
            "ImageScale",
            [
                _in("image", "IMAGE"),
                _combo("upscale_method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]),
                _in("width", "INT", **scale_size),
                _in("height", "INT", **scale_size),
                _combo("crop", ["disabled", "center"]),
            ],
            ["IMAGE"],
            "Upscale Image",
        ),
        _node(
            "LoraLoader",
            [
                _in("model", "MODEL"),
                _in("clip", "CLIP"),
                _combo("lora_name", LORAS),
                _in("strength_model", "FLOAT", default=1.0, min=-100.0, max=100.0, step=0.01),
                _in("strength_clip", "FLOAT", default=1.0, min=-100.0, max=100.0, step=0.01),
            ],
            ["MODEL", "CLIP"],
            "Load LoRA",
        ),
        _node("ControlNetLoader", [_combo("control_net_name", CONTROLNETS)], ["CONTROL_NET"], "Load ControlNet Model"),
        _node(
            "ControlNetApplyAdvanced",
            [
                _in("positive", "CONDITIONING"),
                _in("negative", "CONDITIONING"),
                _in("control_net", "CONTROL_NET"),
                _in("image", "IMAGE"),
                _in("strength", "FLOAT", default=1.0, min=0.0, max=10.0, step=0.01),
                _in("start_percent", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.001),
                _in("end_percent", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.001),
                _in("vae", "VAE", "optional"),
            ],
            ["CONDITIONING", "CONDITIONING"],
            "Apply ControlNet",
        ),
        _node("UpscaleModelLoader", [_combo("model_name", UPSCALE_MODELS)], ["UPSCALE_MODEL"], "Load Upscale Model"),
        _node(
            "ImageUpscaleWithModel",
            [_in("upscale_model", "UPSCALE_MODEL"), _in("image", "IMAGE")],
            ["IMAGE"],
            "Upscale Image (using Model)",
        ),
        _node(
            "PrimitiveInt",
            [_in("value", "INT", min=-SYS_MAXSIZE, max=SYS_MAXSIZE, control_after_generate=True)],
            ["INT"],
            "Int",
            python_module="comfy_extras.nodes_primitive",
        ),
        _node(
            "PrimitiveFloat",
            [_in("value", "FLOAT", min=-SYS_MAXSIZE, max=SYS_MAXSIZE)],
            ["FLOAT"],
            "Float",
            python_module="comfy_extras.nodes_primitive",
        ),
        _node(
            "PrimitiveString",
            [_in("value", "STRING")],
            ["STRING"],
            "String",
            python_module="comfy_extras.nodes_primitive",
        ),
        _node(
            "PrimitiveBoolean",
            [_in("value", "BOOLEAN")],
            ["BOOLEAN"],
            "Boolean",
            python_module="comfy_extras.nodes_primitive",
        ),
        _node(
            "StringConcatenate",
            [
                _in("string_a", "STRING", multiline=True),
                _in("string_b", "STRING", multiline=True),
                _in("delimiter", "STRING", default=""),
            ],
            ["STRING"],
            "Concatenate",
            python_module="comfy_extras.nodes_string",
        ),
        _node(
            "PreviewAny",
            [_in("source", "*")],
            [],
            "Preview Any",
            output_node=True,
            python_module="comfy_extras.nodes_preview_any",
        ),
        # Custom-node shapes that core nodes lack: a forceInput widget type and a multi-select combo.
        _node(
            "ShowTextForced",
            [_in("text", "STRING", forceInput=True), _in("repeat", "INT", default=1, min=1)],
            ["STRING"],
            "Show Text (forced input)",
            python_module="custom_nodes.toy",
        ),
        _node(
            "TagFilter",
            [
                _in("text", "STRING", multiline=True),
                _combo("tags", ["cat", "dog", "bird"], multi_select={"placeholder": "tags"}),
            ],
            ["STRING"],
            "Tag Filter",
            python_module="custom_nodes.toy",
        ),
    ]
    return Registry({schema.name: schema for schema in schemas})


@pytest.fixture(scope="session")
def toy_registry() -> Registry:
    """A registry of ComfyUI-shaped core node schemas (shared; do not mutate, use build_toy_registry())."""
    return build_toy_registry()
