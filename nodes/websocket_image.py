"""SaveImageWebsocket: images sent to the prompt's client over the websocket, no file written.

This is the node of ComfyUI's ``custom_nodes/websocket_image_save.py``, which its API
example ``websockets_api_example_ws_images.py`` uses. Each image of the batch goes out
as a progress step carrying a PNG preview; the server turns that into one binary frame
for the prompt's client (PROTOCOL.md 3.4: type 1, format 2 = PNG, or type 4 with
metadata for clients that asked for it).
"""

from __future__ import annotations

import time

from diffusion.images import to_pil

from .api import Context, Image, Result, node


@node(category="api/image", display_name="SaveImageWebsocket", output_node=True,
      python_module="custom_nodes.websocket_image_save")
def SaveImageWebsocket(images: Image, *, ctx: Context) -> Result:
    """Sends each image to the client that queued the prompt as a PNG in a binary websocket frame."""
    total = images.shape[0]
    for step, image in enumerate(images):
        picture = to_pil(image)
        # The longest side as the size limit: the server never shrinks these to its preview size.
        ctx.progress(step, total, ("PNG", picture, max(picture.size)))
    return Result()


@SaveImageWebsocket.fingerprint
def _always_send() -> float:
    """A new value each time: the images are sent again on every run, as in ComfyUI."""
    return time.time()
