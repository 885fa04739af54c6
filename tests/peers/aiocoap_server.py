#!/usr/bin/env python3
"""An aiocoap test server for twinhub's CoAP interop tests.

Binds 127.0.0.1 on an ephemeral port, prints "PORT <n>" on stdout once it serves, and runs
until stdin closes (so it ends with the test that started it) or 60 s pass.
Resources: /hello (text "world"), /big (100 KiB, block-wise), /obs (observable; a new
value "n=<k>" every 100 ms), /echo (PUT/POST echo the payload).
"""
import asyncio
import socket
import sys

import aiocoap
import aiocoap.resource as resource


class Hello(resource.Resource):
    async def render_get(self, request):
        return aiocoap.Message(payload=b"world", content_format=0)


class Big(resource.Resource):
    BODY = bytes(b"0123456789abcdef"[i % 16] for i in range(100 * 1024))

    async def render_get(self, request):
        return aiocoap.Message(payload=self.BODY, content_format=42)


class Echo(resource.Resource):
    async def render_put(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload)

    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CREATED, payload=request.payload)


class Obs(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.n = 0
        self.task = None

    def update_observation_count(self, count):
        if count and self.task is None:
            self.task = asyncio.get_event_loop().create_task(self.tick())

    async def tick(self):
        while True:
            await asyncio.sleep(0.1)
            self.n += 1
            self.updated_state()

    async def render_get(self, request):
        return aiocoap.Message(payload=b"n=%d" % self.n, content_format=0)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def main():
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["hello"], Hello())
    site.add_resource(["big"], Big())
    site.add_resource(["echo"], Echo())
    site.add_resource(["obs"], Obs())
    port = free_port()
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    print("PORT %d" % port, flush=True)
    loop = asyncio.get_event_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, timeout=60)
    except asyncio.TimeoutError:
        pass
    await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
