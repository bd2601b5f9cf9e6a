class MultiplyFloat:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"a": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.5}),
                             "b": ("FLOAT", {"default": 2.0})}}

    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("product",)
    FUNCTION = "multiply"
    CATEGORY = "example/math"

    def multiply(self, a, b):
        return (a * b,)


class BrokenInputs:
    """INPUT_TYPES raises: this one class is reported, the rest of the pack loads."""

    @classmethod
    def INPUT_TYPES(s):
        raise RuntimeError("cannot list inputs")

    RETURN_TYPES = ()
    FUNCTION = "run"


NODE_CLASS_MAPPINGS = {"MultiplyFloat": MultiplyFloat, "BrokenInputs": BrokenInputs}
NODE_DISPLAY_NAME_MAPPINGS = {"MultiplyFloat": "Multiply (float)"}
