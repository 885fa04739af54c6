#!/usr/bin/env python3
"""A scripted LWM2M bootstrap client on aiocoap (a third-party CoAP stack), driven by
tests/lwm2m_server_interop.rs.

It sends Bootstrap-Request (POST /bs?ep=<endpoint>) from the socket it serves requests on,
then answers the bootstrap server: Bootstrap-Discover (GET /, link format), Bootstrap-Delete
(DELETE /), Bootstrap-Write (PUT /0/<i> and /1/<i>, whatever their payload) and
Bootstrap-Finish (POST /bs). One line per request it got, payloads in hex:

  REQUEST <method> <path> <content-format or -> <hex payload>
  FINISHED          (after Bootstrap-Finish)
  ERROR <text>

  usage: aiocoap_bootstrap_client.py <host> <port> <endpoint>
"""
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def show(path, request):
    # aiocoap's Site strips the path it routed on: each resource knows its own.
    cf = request.opt.content_format
    cf = "-" if cf is None else str(int(cf))
    out("REQUEST %s %s %s %s" % (request.code, path, cf, request.payload.hex() or "-"))


class Root(resource.Resource):
    async def render_get(self, request):
        show("/", request)
        return Message(
            payload=b'lwm2m="1.1",</0/0>;uri="coap://127.0.0.1:5783",</1>,</3/0>',
            content_format=40,
        )

    async def render_delete(self, request):
        show("/", request)
        return Message(code=Code.DELETED)


class Instance(resource.Resource):
    def __init__(self, path):
        super().__init__()
        self.path = path

    async def render_put(self, request):
        show(self.path, request)
        return Message(code=Code.CHANGED)


class Finish(resource.Resource):
    def __init__(self, done):
        super().__init__()
        self.done = done

    async def render_post(self, request):
        show("/bs", request)
        self.done.set()
        return Message(code=Code.CHANGED)


async def main(host, port, endpoint):
    done = asyncio.Event()
    site = resource.Site()
    site.add_resource([], Root())
    for path in (["0", "1"], ["1", "0"]):
        site.add_resource(path, Instance("/" + "/".join(path)))
    site.add_resource(["bs"], Finish(done))
    ctx = await aiocoap.Context.create_server_context(site, bind=(host, 0))
    request = Message(code=Code.POST, uri="coap://%s:%s/bs?ep=%s" % (host, port, endpoint))
    resp = await asyncio.wait_for(ctx.request(request).response, 10)
    if resp.code != Code.CHANGED:
        out("ERROR bootstrap-request answered %s" % resp.code)
        return
    await asyncio.wait_for(done.wait(), 10)
    # Let the answer to Finish go out before the context closes.
    await asyncio.sleep(0.2)
    out("FINISHED")
    await ctx.shutdown()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), timeout=30))
    except Exception as e:  # report, never hang the test
        out("ERROR %r" % (e,))
