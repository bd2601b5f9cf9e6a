"""Declaring nodes as typed functions: what the signature turns into, and how the schema runs them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import pytest

from graph.schema import ExecutionBlocker, ExecutionInterrupted
from nodes.api import (
    REQUIRED,
    AnyType,
    Clip,
    Conditioning,
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Input,
    Latent,
    Mask,
    Model,
    Multiline,
    OneOf,
    Output,
    Range,
    Result,
    Seed,
    Services,
    Socket,
    Tooltip,
    UniqueId,
    Vae,
    files_in,
    files_in_input,
    node,
)
from nodes.folders import Folders
from nodes.object_info import node_info


class RecordingContext:
    """A minimal ExecContext, as the executor provides: records progress, stops when told."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.node_id, self.prompt_id = "7", "p1"
        self.steps: list[tuple[int, int]] = []
        self.stop_at = stop_at

    def progress(self, value: int, total: int, preview: Any | None = None) -> None:
        self.steps.append((value, total))
        self.check_interrupted()

    def check_interrupted(self) -> None:
        if self.stop_at is not None and len(self.steps) >= self.stop_at:
            raise ExecutionInterrupted()


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(folders=Folders(tmp_path))


def test_widget_types_bounds_and_defaults(services: Services) -> None:
    @node(category="test")
    def Widgets(
        count: Annotated[int, Range(1, 10_000)] = 20,
        cfg: Annotated[float, Range(0.0, 100.0, step=0.1, round=0.01)] = 8.0,
        text: Annotated[str, Multiline(dynamic_prompts=True)] = "",
        flag: bool = True,
        seed: Annotated[int, Seed(), Tooltip("The seed.")] = 0,
    ) -> int:
        """Does nothing."""
        return count

    info = node_info(Widgets.schema(services))
    assert info["input"]["required"] == {
        "count": ["INT", {"default": 20, "min": 1, "max": 10000}],
        "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
        "text": ["STRING", {"default": "", "multiline": True, "dynamicPrompts": True}],
        "flag": ["BOOLEAN", {"default": True}],
        "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True,
                         "tooltip": "The seed."}],
    }
    assert info["input_order"] == {"required": ["count", "cfg", "text", "flag", "seed"]}
    assert info["description"] == "Does nothing."
    assert info["output"] == ["INT"] and info["output_name"] == ["INT"]


def test_sockets_optional_hidden_and_custom_types(services: Services) -> None:
    MyType = Socket("MY_TYPE")

    @node()
    def Sockets(
        model: Model,
        mask: Mask | None = None,
        extra: Annotated[MyType, Input(optional=True, tooltip="custom")] = None,
        anything: AnyType = REQUIRED,
        prompt: HiddenPrompt = None,
        extra_pnginfo: ExtraPngInfo = None,
        unique_id: UniqueId = None,
    ) -> MyType:
        """Sockets."""
        return extra

    info = node_info(Sockets.schema(services))
    assert info["input"] == {
        "required": {"model": ["MODEL"], "anything": ["*"]},
        "optional": {"mask": ["MASK"], "extra": ["MY_TYPE", {"tooltip": "custom"}]},
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
    }
    assert info["input_order"] == {"required": ["model", "anything"], "optional": ["mask", "extra"],
                                   "hidden": ["prompt", "extra_pnginfo", "unique_id"]}
    assert info["output"] == ["MY_TYPE"]


def test_named_tuple_outputs_with_tooltips_and_lists(services: Services) -> None:
    class Loaded(NamedTuple):
        MODEL: Annotated[Model, Tooltip("The denoiser.")]
        CLIP: Clip
        VAE: Vae
        frames: list[Image]

    @node(category="loaders")
    def Loader() -> Loaded:
        """Loads."""
        return Loaded("m", "c", "v", ["i1", "i2"])

    schema = Loader.schema(services)
    info = node_info(schema)
    assert info["output"] == ["MODEL", "CLIP", "VAE", "IMAGE"]
    assert info["output_name"] == ["MODEL", "CLIP", "VAE", "frames"]
    assert info["output_is_list"] == [False, False, False, True]
    assert info["output_tooltips"] == ["The denoiser.", "", "", ""]
    assert info["input"] == {"required": {}}
    assert schema.behaviour.execute(None, RecordingContext(), {}) == ("m", "c", "v", ["i1", "i2"])


def test_tuple_return_and_output_names(services: Services) -> None:
    @node()
    def Pair(x: int = 1) -> tuple[Annotated[int, Output("double", "Twice x.")], str]:
        """Two outputs."""
        return x * 2, str(x)

    schema = Pair.schema(services)
    assert [(o.type, o.name, o.tooltip) for o in schema.outputs] == [("INT", "double", "Twice x."),
                                                                       ("STRING", "STRING", None)]
    assert schema.behaviour.execute(None, RecordingContext(), {"x": 4}) == (8, "4")


def test_wrong_output_count_is_an_error(services: Services) -> None:
    @node()
    def Bad() -> tuple[int, int]:
        """Returns one value for two outputs."""
        return 1  # type: ignore[return-value]

    with pytest.raises(TypeError, match="must return 2 values"):
        Bad.schema(services).behaviour.execute(None, RecordingContext(), {})


def test_output_node_returns_ui_and_blocker_blocks_every_output(services: Services) -> None:
    @node(output_node=True)
    def Show(text: str) -> Result:
        """Shows text."""
        return Result(ui={"text": [text]})

    @node()
    def Gate(x: int, open: bool) -> tuple[int, int]:
        """Blocks both outputs when closed."""
        return (x, x) if open else ExecutionBlocker(None)  # type: ignore[return-value]

    @node(output_node=True)
    def ShowDict(text: str) -> None:
        """Returns ComfyUI's dict form directly."""
        return {"ui": {"text": [text]}}  # type: ignore[return-value]

    @node()
    def MakeLatent() -> Latent:
        """A LATENT is a dict too, but not a result dict."""
        return {"samples": 1}

    assert ShowDict.schema(services).behaviour.execute(None, RecordingContext(), {"text": "x"}) == {
        "ui": {"text": ["x"]}}
    assert MakeLatent.schema(services).behaviour.execute(None, RecordingContext(), {}) == ({"samples": 1},)
    @node(output_node=True)
    def Forgetful() -> None:
        """Returns a value although it declares no outputs."""
        return 3  # type: ignore[return-value]

    with pytest.raises(TypeError, match="has no outputs"):
        Forgetful.schema(services).behaviour.execute(None, RecordingContext(), {})
    show = Show.schema(services)
    assert show.output_node and show.outputs == ()
    assert show.behaviour.execute(None, RecordingContext(), {"text": "hi"}) == {"result": (), "ui": {"text": ["hi"]}}
    blocked = Gate.schema(services).behaviour.execute(None, RecordingContext(), {"x": 1, "open": False})
    assert len(blocked) == 2 and all(isinstance(b, ExecutionBlocker) for b in blocked)


def test_context_gives_progress_interrupt_and_services(services: Services) -> None:
    seen: dict[str, Any] = {}

    @node()
    def Loop(steps: int = 3, *, ctx: Context) -> int:
        """Reports progress per step."""
        seen["node"], seen["folders"] = ctx.node_id, ctx.folders
        for i in range(steps):
            ctx.progress(i + 1, steps)
        return steps

    schema = Loop.schema(services)
    assert [i.name for i in schema.inputs] == ["steps"]  # ctx is not an input
    exec_ctx = RecordingContext()
    assert schema.behaviour.execute(None, exec_ctx, {"steps": 3}) == (3,)
    assert exec_ctx.steps == [(1, 3), (2, 3), (3, 3)]
    assert seen == {"node": "7", "folders": services.folders}
    with pytest.raises(ExecutionInterrupted):
        schema.behaviour.execute(None, RecordingContext(stop_at=2), {"steps": 5})


def test_file_combo_reads_the_registrys_own_folders(tmp_path: Path) -> None:
    @node()
    def PickCheckpoint(ckpt_name: Annotated[str, OneOf(files_in("checkpoints"))]) -> str:
        """Lists checkpoints."""
        return ckpt_name

    a, b = Folders(tmp_path / "a"), Folders(tmp_path / "b")
    (tmp_path / "a/models/checkpoints").mkdir(parents=True)
    (tmp_path / "a/models/checkpoints/one.safetensors").write_bytes(b"")
    schema_a = PickCheckpoint.schema(Services(folders=a))
    schema_b = PickCheckpoint.schema(Services(folders=b))
    assert node_info(schema_a)["input"]["required"]["ckpt_name"] == [["one.safetensors"]]
    assert node_info(schema_b)["input"]["required"]["ckpt_name"] == [[]]
    (tmp_path / "a/models/checkpoints/two.ckpt").write_bytes(b"")  # read again at each request
    assert node_info(schema_a)["input"]["required"]["ckpt_name"] == [["one.safetensors", "two.ckpt"]]


# Module level: a lambda inside a postponed annotation sees module globals, not the enclosing function.
_LATER = ["x"]


def test_input_image_combo_with_upload_and_file_fingerprint(services: Services) -> None:
    @node(category="image")
    def LoadText(
        image: Annotated[str, OneOf(files_in_input(("text",))), Input(image_upload=True)],
    ) -> str:
        """Reads a file of the input dir."""
        return image

    @LoadText.fingerprint
    def _content(image: str, services: Services) -> str:
        return (services.folders.input_dir / image).read_text()

    input_dir = services.folders.input_dir
    input_dir.mkdir()
    (input_dir / "a.txt").write_text("one")
    (input_dir / "b.png").write_bytes(b"")
    schema = LoadText.schema(services)
    assert node_info(schema)["input"]["required"]["image"] == [["a.txt"], {"image_upload": True}]
    assert schema.behaviour.fingerprint({"image": "a.txt"}) == "one"
    (input_dir / "a.txt").write_text("two")
    assert schema.behaviour.fingerprint({"image": "a.txt"}) == "two"


def test_static_and_callable_combos(services: Services) -> None:
    @node()
    def Combos(
        sampler_name: Annotated[str, OneOf(("euler", "heun")), Tooltip("Algorithm.")] = "euler",
        later: Annotated[str, OneOf(lambda: _LATER)] = REQUIRED,
    ) -> str:
        """Combos."""
        return sampler_name

    schema = Combos.schema(services)
    _LATER.append("y")
    assert node_info(schema)["input"]["required"] == {
        "sampler_name": [["euler", "heun"], {"default": "euler", "tooltip": "Algorithm."}],
        "later": [["x", "y"]],
    }
    assert schema.input("later").is_combo and schema.input("later").is_widget


def test_fingerprint_validator_and_lazy_hooks(services: Services, tmp_path: Path) -> None:
    @node()
    def Switch(
        switch: bool,
        on_true: Annotated[AnyType, Input(lazy=True)] = None,
        on_false: Annotated[AnyType, Input(lazy=True)] = None,
    ) -> AnyType:
        """Passes the chosen input through."""
        return on_true if switch else on_false

    @Switch.lazy_status
    def _needed(switch: bool, on_true: Any, on_false: Any) -> list[str]:
        wanted = "on_true" if switch else "on_false"
        return [wanted] if locals()[wanted] is None else []

    @Switch.fingerprint
    def _changed(switch: bool, services: Services) -> str:
        return f"{switch}:{services.folders.base_dir}"

    @Switch.validator
    def _check(switch: bool, input_types: dict[str, str] | None = None) -> bool | str:
        return True if input_types is None or input_types.get("on_true") != "BAD" else "bad type"

    b = Switch.schema(services).behaviour
    assert Switch.schema(services).input("on_true").lazy
    assert b.check_lazy(None, {"switch": True, "on_true": None, "on_false": None}) == ["on_true"]
    assert b.check_lazy(None, {"switch": False, "on_true": None, "on_false": 3}) == []
    assert b.fingerprint({"switch": True, "on_true": None}) == f"True:{tmp_path}"
    assert b.validate_params == frozenset({"switch"}) and b.validate_wants_input_types
    assert b.validate({"switch": True, "input_types": {"on_true": "BAD"}}) == "bad type"
    assert b.validate({"switch": True}) is True
    # A lazy input that was never evaluated arrives as None.
    assert b.execute(None, RecordingContext(), {"switch": False, "on_false": 5}) == (5,)


def test_input_is_list_from_list_annotations(services: Services) -> None:
    @node()
    def Join(strings: list[str], separator: list[str]) -> list[str]:
        """Joins all strings at once."""
        return [separator[0].join(strings)]

    schema = Join.schema(services)
    assert schema.input_is_list
    assert [(i.name, i.type) for i in schema.inputs] == [("strings", "STRING"), ("separator", "STRING")]
    assert schema.outputs[0].is_list
    assert schema.behaviour.execute(None, RecordingContext(), {"strings": ["a", "b"], "separator": ["-"]}) == (
        ["a-b"],)


def test_async_node_function(services: Services) -> None:
    @node()
    async def Slow(text: str) -> str:
        """Awaits something."""
        await asyncio.sleep(0)
        return text * 2

    assert Slow.schema(services).behaviour.execute(None, RecordingContext(), {"text": "ab"}) == ("abab",)


async def test_async_node_function_inside_a_running_loop(services: Services) -> None:
    @node()
    async def Slow(text: str) -> str:
        """Awaits something."""
        await asyncio.sleep(0)
        return text.upper()

    assert Slow.schema(services).behaviour.execute(None, RecordingContext(), {"text": "ab"}) == ("AB",)


def test_flags_and_direct_call(services: Services) -> None:
    @node(name="OldNode", display_name="Old node", deprecated=True, experimental=True, not_idempotent=True,
          category="x/y", description="Explicit.")
    def old(a: int = 1, conditioning: Conditioning = None, latent: Latent = None) -> int:
        """Ignored docstring."""
        return a + 1

    info = node_info(old.schema(services))
    assert (info["name"], info["display_name"], info["category"], info["description"]) == (
        "OldNode", "Old node", "x/y", "Explicit.")
    assert info["deprecated"] is True and info["experimental"] is True
    assert old.schema(services).not_idempotent
    assert old(a=4) == 5  # the declaration is still the plain function


def test_mixed_list_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="every input is a list"):

        @node()
        def Mixed(a: list[int], b: int) -> int:
            """Half INPUT_IS_LIST."""
            return b


def test_undeclarable_types_fail_at_declaration() -> None:
    with pytest.raises(TypeError, match="cannot tell the ComfyUI type"):

        @node()
        def Bad(x: bytes) -> int:
            """Bytes are not a ComfyUI type."""
            return 0
