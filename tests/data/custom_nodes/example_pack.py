"""A custom node pack written the way ComfyUI V1 packs are (test data for nodes.compat)."""

import asyncio


class AnyType(str):
    """The community "any type" trick: never unequal to another type."""

    def __ne__(self, other):
        return False


any_type = AnyType("*")

# Mutable on purpose: DynamicChoices.INPUT_TYPES reads it each time (like a file list).
CHOICES = ["first", "second"]


class StringRepeat:
    """Plain node: widgets with bounds and a tooltip."""

    DESCRIPTION = "Repeats a string."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": "ab"}),
                "times": ("INT", {"default": 2, "min": 1, "max": 100, "tooltip": "How many copies."}),
            },
            "optional": {
                "separator": ("STRING", {"default": ""}),
            },
        }

    RETURN_TYPES = ("STRING",)
    FUNCTION = "repeat"
    CATEGORY = "example/text"

    def repeat(self, text, times, separator=""):
        return (separator.join([text] * times),)


class JoinStrings:
    """INPUT_IS_LIST: called once with every input as a list."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"strings": ("STRING", {"forceInput": True}), "separator": ("STRING", {"default": ","})}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING",)
    FUNCTION = "join"
    CATEGORY = "example/text"

    def join(self, strings, separator):
        return (separator[0].join(strings),)


class SplitWords:
    """OUTPUT_IS_LIST: the first output is a list of values, the second a single count."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "a b c"})}}

    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("words", "count")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("Each word.", "How many words.")
    FUNCTION = "split"
    CATEGORY = "example/text"

    def split(self, text):
        words = text.split()
        return (words, len(words))


class EvenNumber:
    """IS_CHANGED and VALIDATE_INPUTS."""

    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 2, "min": 0, "max": 10}), "label": ("STRING", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "example/math"

    @classmethod
    def IS_CHANGED(cls, value):
        return f"even:{value}"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        if value % 2:
            return f"{value} is odd"
        return True

    def run(self, value, label):
        return (value,)


class TypeCheckedNode:
    """VALIDATE_INPUTS taking input_types, and one taking **kwargs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"anything": (any_type, {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    def run(self, anything):
        return (str(anything),)


class KwargsValidated:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return True if sum(v for v in kwargs.values() if v is not None) < 100 else "too big"

    def run(self, a, b):
        return (a + b,)


class LazySwitch:
    """Lazy inputs: only the chosen branch is evaluated."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "switch": ("BOOLEAN", {"default": True}),
                "on_true": (any_type, {"lazy": True}),
                "on_false": (any_type, {"lazy": True}),
            }
        }

    RETURN_TYPES = (any_type,)
    FUNCTION = "pick"
    CATEGORY = "example/flow"

    def check_lazy_status(self, switch, on_true=None, on_false=None):
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    def pick(self, switch, on_true=None, on_false=None):
        return (on_true if switch else on_false,)


class ShowText:
    """Output node with hidden inputs returning a ui dict."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"text": ("STRING", {"forceInput": True})},
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True
    FUNCTION = "show"
    CATEGORY = "example/ui"

    def show(self, text, unique_id=None, prompt=None, extra_pnginfo=None):
        return {"ui": {"text": [text]}, "result": (text,)}


class AsyncEcho:
    """An async FUNCTION."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "echo"
    CATEGORY = "example/text"

    async def echo(self, text):
        await asyncio.sleep(0)
        return (text.upper(),)


class DynamicChoices:
    """INPUT_TYPES that changes at run time (like a list of files)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choice": (list(CHOICES),), "mode": ("COMBO", {"options": ["a", "b"]})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    DEPRECATED = True
    EXPERIMENTAL = True
    NOT_IDEMPOTENT = True

    def run(self, choice, mode):
        return (choice + mode,)


class Clock:
    """IS_CHANGED returning NaN: never equal to itself, so the node runs every time."""

    runs = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": "now"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "tick"

    @classmethod
    def IS_CHANGED(cls, label):
        return float("nan")

    def tick(self, label):
        Clock.runs += 1
        return (Clock.runs,)


class Counter:
    """Keeps state on the instance: ComfyUI caches instances per (node id, class)."""

    def __init__(self):
        self.count = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "tick"

    def tick(self):
        self.count += 1
        return (self.count,)


NODE_CLASS_MAPPINGS = {
    "StringRepeat": StringRepeat,
    "JoinStrings": JoinStrings,
    "SplitWords": SplitWords,
    "EvenNumber": EvenNumber,
    "TypeCheckedNode": TypeCheckedNode,
    "KwargsValidated": KwargsValidated,
    "LazySwitch": LazySwitch,
    "ShowText": ShowText,
    "AsyncEcho": AsyncEcho,
    "DynamicChoices": DynamicChoices,
    "Counter": Counter,
    "Clock": Clock,
    # A custom node may not replace a built-in one: this entry is ignored.
    "PrimitiveInt": StringRepeat,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "StringRepeat": "Repeat String",
    "LazySwitch": "Switch (lazy)",
}
