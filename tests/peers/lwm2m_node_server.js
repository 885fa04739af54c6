// An LWM2M server from lwm2m-node-lib (a third-party implementation) that drives our client.
// Used by tests/lwm2m_client_interop.rs.
//
// Starts the server on an ephemeral UDP port and prints `PORT <n>`. When a device
// registers it prints `REGISTERED <endpoint> <lifetime>` and runs a script of device
// management operations against it, printing one `RESULT <name> <json>` line each:
// read, write (lightweightm2m/text, 1541), read back, execute with arguments, Reboot,
// write-attributes, discover, observe. It prints `NOTIFY <value>` for every notification
// after the first, `UPDATED`, `DEREGISTERED` as they come, and exits by itself after
// 25 seconds at most.
'use strict';

const path = require('path');
const lwm2m = require(path.join(__dirname, 'node_modules', 'lwm2m-node-lib'));
const server = lwm2m.server;

const config = {
    port: 0,
    lifetimeCheckInterval: 1000,
    udpWindow: 100,
    serverProtocol: 'udp4',
    formats: [
        { name: 'lightweightm2m/text', value: 1541 },
        { name: 'application/vnd.oma.lwm2m+tlv', value: 11542 },
        { name: 'application/senml+json', value: 110 },
    ],
    writeFormat: 'lightweightm2m/text',
    logLevel: 'FATAL',
    defaultType: 'Device',
};

function out(line) {
    process.stdout.write(line + '\n');
}

setTimeout(() => {
    out('TIMEOUT');
    process.exit(1);
}, 90000);

function step(name, fn) {
    return new Promise((resolve) => {
        fn((err, value) => {
            out('RESULT ' + name + ' ' + JSON.stringify(err ? { error: String(err.name || err), code: err.code || null } : { value: value === undefined ? null : value }));
            resolve();
        });
    });
}

async function drive(endpoint) {
    // Give the device a moment to take the registration answer.
    await new Promise((r) => setTimeout(r, 200));
    const dev = await new Promise((resolve, reject) =>
        server.getDevice(endpoint, (err, d) => (err ? reject(err) : resolve(d))));
    const id = dev.id;
    await step('read_manufacturer', (cb) => server.read(id, 3, 0, 0, cb));
    await step('write_timezone', (cb) => server.write(id, 3, 0, 15, 'Europe/Paris', cb));
    await step('read_timezone', (cb) => server.read(id, 3, 0, 15, cb));
    await step('write_readonly', (cb) => server.write(id, 3, 0, 0, 'x', cb));
    await step('execute_apply', (cb) => server.execute(id, 10241, 0, 3, "0='fast'", cb));
    await step('execute_reboot', (cb) => server.execute(id, 3, 0, 4, null, cb));
    await step('write_attributes', (cb) => server.writeAttributes(id, 3, 0, 9, { pmin: 0, pmax: 30 }, cb));
    await step('discover', (cb) => server.discover(id, 3, 0, 9, cb));
    await step('read_missing', (cb) => server.read(id, 3, 0, 99, cb));
    await step('observe_battery', (cb) => server.observe(id, 3, 0, 9, (value) => out('NOTIFY ' + value), cb));
}

server.start(config, (error, serverInfo) => {
    if (error) {
        out('ERROR ' + error);
        process.exit(1);
    }
    const port = serverInfo.server._sock.address().port;
    // Device management requests go through the server's own proxy port.
    config.port = port;
    server.setHandler(serverInfo, 'registration', (endpoint, lifetime, version, binding, payload, cb) => {
        out('REGISTERED ' + endpoint + ' ' + lifetime + ' ' + JSON.stringify(payload));
        cb();
        drive(endpoint).catch((e) => out('ERROR ' + e));
    });
    server.setHandler(serverInfo, 'updateRegistration', (device, payload, cb) => {
        out('UPDATED');
        cb();
    });
    server.setHandler(serverInfo, 'unregistration', (device, cb) => {
        out('DEREGISTERED');
        cb();
        setTimeout(() => process.exit(0), 100);
    });
    out('PORT ' + port);
});
