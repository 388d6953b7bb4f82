"""An HTTP app that says which version it is, and counts the calls it received.

    APP_PORT=6002 APP_VERSION=v2 python versioned_app.py

Every path but `/received` answers `{"version": …, "path": …, "headers": {…}}`;
`GET /received` answers how many calls it answered so far (`{"count": n}`), so a test
can count what each version received without trusting the caller's side.
"""

import json
import os

from aiohttp import web

VERSION = os.environ.get("APP_VERSION", "")
answered = 0


async def received(request: web.Request) -> web.Response:
    return web.json_response({"count": answered, "version": VERSION})


async def answer(request: web.Request) -> web.Response:
    global answered
    answered += 1
    body = {"version": VERSION, "path": request.path, "headers": dict(request.headers)}
    return web.Response(text=json.dumps(body), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_get("/received", received)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
