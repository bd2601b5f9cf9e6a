"""A pack written for ComfyUI's V3 node schema (comfy_api.latest)."""

from comfy_api.latest import ComfyExtension, io, ui


class RepeatText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3RepeatText",
            display_name="Repeat Text (V3)",
            category="test/v3",
            description="Repeats a text.",
            inputs=[
                io.String.Input("text", default="ab", multiline=True),
                io.Int.Input("times", default=2, min=1, max=10, tooltip="How many copies."),
                io.Combo.Input("joiner", options=["none", "dash"], default="none"),
                io.Float.Input("unused", default=0.5, min=0.0, max=1.0, step=0.1, optional=True),
            ],
            outputs=[io.String.Output(display_name="repeated"), io.Int.Output("length")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, text, times, joiner, unused=0.5):
        out = ("-" if joiner == "dash" else "").join([text] * times)
        return io.NodeOutput(out, len(out), ui=ui.PreviewText(f"{cls.hidden.unique_id}:{out}"))

    @classmethod
    def fingerprint_inputs(cls, text, times):
        return f"{text}*{times}"

    @classmethod
    def validate_inputs(cls, times):
        return True if times != 7 else "7 is unlucky"


class MaskStats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3MaskMean", category="test/v3",
                         inputs=[io.Mask.Input("mask")], outputs=[io.Float.Output()])

    @classmethod
    async def execute(cls, mask):  # V3 nodes may be async
        return io.NodeOutput(float(mask.mean()))


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [RepeatText, MaskStats]


async def comfy_entrypoint():
    return Extension()
