"""The invocation benchmark's target app B: a minimal aiohttp server answering `/echo` with the request body.

APP_PORT=… python echo_app.py
"""

import os

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


if __name__ == "__main__":
    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None, access_log=None)
