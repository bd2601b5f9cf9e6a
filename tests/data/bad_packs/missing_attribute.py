"""A pack that uses a ComfyUI attribute noodlebox does not provide."""

import comfy.utils

comfy.utils.no_such_helper()
NODE_CLASS_MAPPINGS = {}
