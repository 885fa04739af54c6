#!/usr/bin/env python3
"""A scripted LWM2M 1.1 client on aiocoap that speaks only SenML CBOR (112), encoded and
decoded with cbor2 (a CBOR codec nobody here wrote), driven by
tests/lwm2m_server_interop.rs through stdin/stdout lines.

It registers without a `ct` attribute (like a C client in its default build), answers
reads of /3/0 and /3/0/9 in SenML CBOR (4.06 to any other Accept), takes writes to /3/0
only in SenML CBOR (4.15 otherwise) and prints what it decoded, and notifies /3/0/9.

  usage: aiocoap_cbor_client.py <host> <port> <endpoint>
  stdout: REGISTERED <location>, ACCEPT <n|none>, WROTE <path=value;...>, OBSERVED,
          NOTIFIED <n>, ERROR <text>
  stdin:  notify | exit
"""
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap import Code, Message

SENML_CBOR = 112


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def accept_of(request):
    accept = request.opt.accept
    out("ACCEPT %s" % ("none" if accept is None else int(accept)))
    return accept is None or int(accept) == SENML_CBOR


class DeviceInstance(resource.Resource):
    def __init__(self):
        super().__init__()
        self.values = {"13": 1367491215, "14": "+02:00"}

    async def render_get(self, request):
        if not accept_of(request):
            return Message(code=Code.NOT_ACCEPTABLE)
        records = [
            {-2: "/3/0/", 0: "0", 3: "Interop Inc"},
            {0: "7/0", 2: 3800},
            {0: "7/1", 2: 5000},
            {0: "9", 2: 88},
            {0: "13", 2: self.values["13"]},
            {0: "14", 3: self.values["14"]},
            {0: "16", 3: "U"},
        ]
        return Message(payload=cbor2.dumps(records), content_format=SENML_CBOR)

    async def render_post(self, request):
        if request.opt.content_format is None or int(request.opt.content_format) != SENML_CBOR:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        bn, seen = "", []
        for rec in cbor2.loads(request.payload):
            bn = rec.get(-2, bn)
            path = bn + rec.get(0, "")
            value = next(rec[k] for k in (2, 3, 4, 8, "vlo") if k in rec)
            seen.append("%s=%s" % (path, value))
        out("WROTE " + ";".join(seen))
        return Message(code=Code.CHANGED)


class Battery(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.level = 88

    async def add_observation(self, request, serverobservation):
        await super().add_observation(request, serverobservation)
        out("OBSERVED")

    async def render_get(self, request):
        if not accept_of(request):
            return Message(code=Code.NOT_ACCEPTABLE)
        payload = cbor2.dumps([{-2: "/3/0/9", 2: self.level}])
        return Message(payload=payload, content_format=SENML_CBOR)


async def main(host, port, endpoint):
    site = resource.Site()
    site.add_resource(["3", "0"], DeviceInstance())
    battery = Battery()
    site.add_resource(["3", "0", "9"], battery)
    ctx = await aiocoap.Context.create_server_context(site, bind=(host, 0))
    base = "coap://%s:%s" % (host, port)
    reg = Message(
        code=Code.POST,
        uri=base + "/rd?ep=%s&lt=60&lwm2m=1.1&b=U" % endpoint,
        payload=b"</1/0>,</3/0>,</5/0>",
        content_format=40,
    )
    resp = await ctx.request(reg).response
    if resp.code != Code.CREATED:
        out("ERROR register %s" % resp.code)
        return
    out("REGISTERED " + "/".join(resp.opt.location_path))

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "notify":
            battery.level -= 1
            battery.updated_state()
            out("NOTIFIED %d" % battery.level)
        elif line in ("exit", ""):
            break
    await ctx.shutdown()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), timeout=60))
    except Exception as e:  # report, never hang the test
        out("ERROR %r" % e)
