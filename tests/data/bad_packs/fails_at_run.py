"""A pack whose node fails when it runs; it prints at import (kept out of stdout)."""

print("fails_at_run says hello")


class AlwaysFails:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test/packs"

    def run(self, value):
        raise ValueError(f"cannot handle {value}")


NODE_CLASS_MAPPINGS = {"AlwaysFails": AlwaysFails}
