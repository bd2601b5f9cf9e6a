"""A pack that reports progress and sends its own websocket event, as many real packs do."""

import comfy.utils
from server import PromptServer


class CountWithProgress:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"count": ("INT", {"default": 3, "min": 1, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    OUTPUT_NODE = True
    CATEGORY = "test/packs"

    def count(self, count, unique_id=None):
        bar = comfy.utils.ProgressBar(count)
        for _ in range(count):
            bar.update(1)
        server = PromptServer.instance
        server.send_sync("progress_pack.done", {"node": unique_id, "count": count,
                                                "client_id": server.client_id, "last_node_id": server.last_node_id})
        print("progress_pack counted", count)  # must not reach our commands' stdout
        return {"ui": {"text": [str(count)]}, "result": (count,)}


print("progress_pack imported")
NODE_CLASS_MAPPINGS = {"CountWithProgress": CountWithProgress}
