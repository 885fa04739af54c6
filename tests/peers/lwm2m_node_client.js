// A scripted LWM2M 1.0 client on lwm2m-node-lib (third-party, used only as a test peer),
// driven by tests/lwm2m_server_interop.rs through stdin/stdout lines.
//
//   usage: node lwm2m_node_client.js <host> <port> <endpoint>
//   stdout: READY, REGISTERED <location>, WRITE <path> <value>, EXECUTE <path> <args>,
//           UPDATED, DEREGISTERED, ERROR <text>
//   stdin:  set <oid/iid> <rid> <value> | update | deregister | exit
'use strict';

const path = require('path');
const readline = require('readline');
const client = require(path.join(__dirname, 'node_modules', 'lwm2m-node-lib')).client;

const [host, port, endpoint] = process.argv.slice(2);
const out = (line) => process.stdout.write(line + '\n');

client.init({
    client: {
        lifetime: '60',
        version: '1.0',
        logLevel: 'FATAL',
        observe: { period: 200 },
        ipProtocol: 'udp4',
        serverProtocol: 'udp4',
        // Its CoAP library drops requests whose Content-Format or Accept it does not know.
        formats: [
            { name: 'lightweightm2m/text', value: 1541 },
            { name: 'application/vnd.oma.lwm2m+tlv', value: 11542 },
            { name: 'application/senml+json', value: 110 },
        ],
        writeFormat: 'lightweightm2m/text',
    },
});

let device = null;

function fail(what, error) {
    out('ERROR ' + what + ' ' + (error && error.message ? error.message : String(error)));
}

function setup(done) {
    client.registry.create('/3/0', (error) => {
        if (error) return done(error);
        const values = [[0, 'ACME'], [1, 'node-lib'], [3, '1.0.0'], [9, '87'], [14, '+01:00']];
        let pending = values.length;
        for (const [rid, v] of values) {
            client.registry.setResource('/3/0', rid, v, (e) => {
                if (e) return done(e);
                if (--pending === 0) done(null);
            });
        }
    });
}

function installHandlers(info) {
    client.setHandler(info.serverInfo, 'write', (objectType, objectId, resourceId, value, cb) => {
        out('WRITE /' + objectType + '/' + objectId + '/' + resourceId + ' ' + value);
        cb(null);
    });
    client.setHandler(info.serverInfo, 'execute', (objectType, objectId, resourceId, args, cb) => {
        out('EXECUTE /' + objectType + '/' + objectId + '/' + resourceId + ' ' + (args || ''));
        cb(null);
    });
}

setup((error) => {
    if (error) return fail('setup', error);
    client.register(host, Number(port), '', endpoint, (err, info) => {
        if (err) return fail('register', err);
        device = info;
        installHandlers(info);
        out('REGISTERED ' + info.location);
    });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const words = line.trim().split(' ');
    switch (words[0]) {
        case 'set':
            client.registry.setResource('/' + words[1], words[2], words.slice(3).join(' '), (e) => {
                if (e) fail('set', e);
            });
            break;
        case 'update':
            client.update(device, (e, info) => {
                if (e) return fail('update', e);
                device = info || device;
                installHandlers(device);
                out('UPDATED');
            });
            break;
        case 'deregister':
            client.unregister(device, (e) => {
                if (e) return fail('deregister', e);
                out('DEREGISTERED');
            });
            break;
        case 'exit':
            process.exit(0);
    }
});

// The test kills us by PID if it ends early; never outlive it.
setTimeout(() => process.exit(3), 60000).unref();
