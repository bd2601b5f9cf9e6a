"""A pack that adds an HTTP route at import and serves frontend files from WEB_DIRECTORY."""

from aiohttp import web
from server import PromptServer

WEB_DIRECTORY = "./web"


@PromptServer.instance.routes.get("/route_pack/hello")
async def hello(request):
    return web.json_response({"hello": request.query.get("name", "pack")})


NODE_CLASS_MAPPINGS = {}
