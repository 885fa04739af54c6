#!/usr/bin/env python3
"""A minimal LWM2M server scripted with aiocoap (a third-party CoAP stack) that drives our
client. Used by tests/lwm2m_client_interop.rs.

Binds 127.0.0.1 on an ephemeral port and prints `PORT <n>`. It accepts one registration
(POST /rd -> 2.01 Location-Path rd/1; prints `REGISTERED <query> <payload>`), then, from
the same socket, sends the client: a TLV read and a SenML JSON read of /3/0, a SenML JSON
write of /3/0/15 and a read back, a 3000-byte firmware package push to /5/0/0 (aiocoap
splits it into Block1 blocks of 1024 bytes), a read of State /5/0/3, Update /5/0/2 and
State again. Before the firmware steps, the LWM2M 1.1 composite operations, their bodies
built by `json` and by cbor2 (a CBOR codec nobody here wrote): Read-Composite (FETCH /) in
SenML JSON and in SenML CBOR (the CBOR answer decoded by cbor2 and printed as `DECODED`),
Write-Composite (iPATCH /) and a read back, a Write-Composite that names a read-only
resource (refused, nothing written), and an Observe-Composite: it prints `OBSERVING`
after the first answer and waits (10 s at most) for one notification (printing its
message type: `MTYPE notify_composite CON`). One
`RESULT <name> <code> <content-format> <payload>` line per request (payload as hex for
TLV, opaque and CBOR). Then `DONE`. Exits after 30 s in any case.
"""

import asyncio
import json
import sys

import cbor2

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message
from aiocoap.numbers.contentformat import ContentFormat

def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Registration(resource.Resource):
    def __init__(self, on_register):
        super().__init__()
        self.on_register = on_register

    async def render_post(self, request):
        query = "&".join(request.opt.uri_query)
        out("REGISTERED %s %s" % (query, request.payload.decode("utf-8", "replace")))
        self.on_register(request.remote)
        return Message(code=Code.CREATED, location_path=["rd", "1"])


class RegistrationEntry(resource.Resource):
    async def render_post(self, request):
        out("UPDATED")
        return Message(code=Code.CHANGED)

    async def render_delete(self, request):
        out("DEREGISTERED")
        return Message(code=Code.DELETED)


def show(name, response, binary=False):
    cf = response.opt.content_format
    cf = "-" if cf is None else str(int(cf))
    payload = response.payload.hex() if binary else response.payload.decode("utf-8", "replace")
    out("RESULT %s %s %s %s" % (name, response.code.dotted, cf, payload))


async def drive(context, remote):
    host = remote.hostinfo
    base = "coap://%s" % host

    async def request(name, code, path, binary=False, **kw):
        msg = Message(code=code, uri=base + path, **kw)
        resp = await asyncio.wait_for(context.request(msg).response, 30)
        show(name, resp, binary)
        return resp

    await request("read_tlv", Code.GET, "/3/0", binary=True, accept=11542)
    await request("read_senml", Code.GET, "/3/0", accept=110)
    await request(
        "write_senml",
        Code.PUT,
        "/3/0/15",
        payload=b'[{"bn":"/3/0/15","vs":"Asia/Tokyo"}]',
        content_format=110,
    )
    await request("read_timezone", Code.GET, "/3/0/15")

    def senml_json(records):
        return json.dumps(records).encode()

    await request(
        "read_composite_json",
        Code.FETCH,
        "/",
        payload=senml_json([{"n": "/3/0/0"}, {"n": "/3/0/9"}]),
        content_format=110,
        accept=110,
    )
    resp = await request(
        "read_composite_cbor",
        Code.FETCH,
        "/",
        binary=True,
        payload=cbor2.dumps([{0: "/3/0/0"}, {-2: "/3/0/", 0: "15"}]),
        content_format=112,
        accept=112,
    )
    out("DECODED read_composite_cbor %s" % json.dumps(cbor2.loads(resp.payload), sort_keys=True))
    await request(
        "write_composite",
        Code.iPATCH,
        "/",
        payload=senml_json([{"n": "/3/0/15", "vs": "Europe/Oslo"}, {"n": "/1/0/3", "v": 55}]),
        content_format=110,
    )
    await request(
        "read_after_write_composite",
        Code.FETCH,
        "/",
        payload=senml_json([{"n": "/3/0/15"}, {"n": "/1/0/3"}]),
        content_format=110,
        accept=110,
    )
    await request(
        "write_composite_read_only",
        Code.iPATCH,
        "/",
        payload=senml_json([{"n": "/3/0/15", "vs": "UTC"}, {"n": "/3/0/0", "vs": "x"}]),
        content_format=110,
    )
    await request("timezone_after_refusal", Code.GET, "/3/0/15")
    observe = context.request(
        Message(
            code=Code.FETCH,
            uri=base + "/",
            observe=0,
            payload=senml_json([{"n": "/3/0/9"}, {"n": "/3/0/15"}]),
            content_format=110,
            accept=110,
        )
    )
    show("observe_composite", await asyncio.wait_for(observe.response, 30))
    out("OBSERVING")
    notifications = observe.observation.__aiter__()
    notification = await asyncio.wait_for(notifications.__anext__(), 30)
    show("notify_composite", notification)
    out("MTYPE notify_composite %s" % notification.mtype.name)
    observe.observation.cancel()
    package = bytes((i * 7) % 256 for i in range(3000))
    await request(
        "push_package",
        Code.PUT,
        "/5/0/0",
        payload=package,
        content_format=42,
    )
    await request("state_after_push", Code.GET, "/5/0/3")
    await request("execute_update", Code.POST, "/5/0/2")
    await request("state_after_update", Code.GET, "/5/0/3")
    out("DONE")


async def main():
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def on_register(remote):
        if not ready.done():
            ready.set_result(remote)

    site = resource.Site()
    site.add_resource(["rd"], Registration(on_register))
    site.add_resource(["rd", "1"], RegistrationEntry())
    context = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", 0), transports=["udp6"]
    )
    port = None
    # The bound port of the UDP transport (aiocoap has no public accessor for it).
    for ri in context.request_interfaces:
        mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        transport = getattr(mi, "transport", None)
        if transport is not None:
            port = transport.get_extra_info("socket").getsockname()[1]
            break
    if port is None:
        out("ERROR cannot find bound port")
        return 1
    out("PORT %d" % port)
    try:
        remote = await asyncio.wait_for(ready, 30)
        await asyncio.sleep(0.1)
        await drive(context, remote)
        await asyncio.sleep(1.0)
    except Exception as e:  # noqa: BLE001 - report anything to the test
        out("ERROR %r" % (e,))
        return 1
    finally:
        await context.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(), 90)))
    except asyncio.TimeoutError:
        out("TIMEOUT")
        sys.exit(1)
