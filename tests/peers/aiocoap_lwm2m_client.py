#!/usr/bin/env python3
"""A scripted LWM2M 1.1 client on aiocoap (third-party CoAP stack), driven by
tests/lwm2m_server_interop.rs through stdin/stdout lines.

It registers from the same socket it serves requests on (an LWM2M client only takes
requests from its server's address), answers reads of /3/0 with the Device-object TLV
vector of the LWM2M 1.0 TS (section 6.4.3.1), and notifies /3/0/9 alternately in TLV
(11542) and SenML JSON (110) from recorded vectors.

  usage: aiocoap_lwm2m_client.py <host> <port> <endpoint>
  stdout: REGISTERED <location>, OBSERVED, NOTIFIED <n>, UPDATED, DEREGISTERED,
          DOWNLOADED <hex body> | DOWNLOAD <code>, ERROR <text>
  stdin:  notify | update | download <path> | deregister | exit

`download` GETs a path from the server over the same socket (aiocoap reassembles a
Block2 response), as a device pulls a firmware package.
"""
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message

DEVICE_TLV = bytes.fromhex(
    "C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65"
    " C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74"
    " C8 02 09 33 34 35 30 30 30 31 32 33"
    " C3 03 31 2E 30"
    " 86 06 41 00 01 41 01 05"
    " 88 07 08 42 00 0E D8 42 01 13 88"
    " 87 08 41 00 7D 42 01 03 84"
    " C1 09 64"
    " C1 0A 0F"
    " 83 0B 41 00 00"
    " C4 0D 51 82 42 8F"
    " C6 0E 2B 30 32 3A 30 30"
    " C1 10 55"
)

# Battery level notifications: (content format, payload).
NOTIFICATIONS = [
    (11542, bytes([0xC1, 0x09, 50])),
    (110, b'[{"bn":"/3/0/","n":"9","v":49}]'),
    (11542, bytes([0xC1, 0x09, 48])),
    (110, b'[{"bn":"/3/0/9","v":47}]'),
]


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class DeviceInstance(resource.Resource):
    async def render_get(self, request):
        return Message(payload=DEVICE_TLV, content_format=11542)


class Battery(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.n = -1

    async def add_observation(self, request, serverobservation):
        await super().add_observation(request, serverobservation)
        out("OBSERVED")

    async def render_get(self, request):
        if self.n < 0:
            return Message(payload=b"51", content_format=0)
        cf, payload = NOTIFICATIONS[self.n % len(NOTIFICATIONS)]
        return Message(payload=payload, content_format=cf)


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
        payload=b'</>;rt="oma.lwm2m";ct="110 11542",</1/0>,</3/0>,</5/0>',
        content_format=40,
    )
    resp = await ctx.request(reg).response
    if resp.code != Code.CREATED:
        out("ERROR register %s" % resp.code)
        return
    location = "/".join(resp.opt.location_path)
    out("REGISTERED " + location)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "notify":
            battery.n += 1
            battery.updated_state()
            out("NOTIFIED %d" % battery.n)
        elif line == "update":
            upd = Message(code=Code.POST, uri=base + "/" + location + "?lt=120")
            resp = await ctx.request(upd).response
            out("UPDATED" if resp.code == Code.CHANGED else "ERROR update %s" % resp.code)
        elif line.startswith("download "):
            path = line.split(" ", 1)[1]
            resp = await ctx.request(Message(code=Code.GET, uri=base + "/" + path)).response
            if resp.code == Code.CONTENT:
                out("DOWNLOADED " + resp.payload.hex())
            else:
                out("DOWNLOAD %d.%02d" % (int(resp.code) >> 5, int(resp.code) & 31))
        elif line == "deregister":
            resp = await ctx.request(Message(code=Code.DELETE, uri=base + "/" + location)).response
            out("DEREGISTERED" if resp.code == Code.DELETED else "ERROR deregister %s" % resp.code)
        elif line in ("exit", ""):
            break
    await ctx.shutdown()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), timeout=60))
    except Exception as e:  # report, never hang the test
        out("ERROR %r" % e)
