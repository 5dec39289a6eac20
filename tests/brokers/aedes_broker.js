// aedes (an MQTT 3.1.1 broker for Node.js) on 127.0.0.1:<port>, for tests/test_second_broker.py.
// Usage: node aedes_broker.js <port>; prints "listening" once it accepts connections.
'use strict'
const aedes = require('aedes')()
const server = require('net').createServer(aedes.handle)
const port = Number(process.argv[2])
server.listen(port, '127.0.0.1', () => { console.log('listening') })
process.on('SIGTERM', () => { server.close(); aedes.close(() => process.exit(0)) })
