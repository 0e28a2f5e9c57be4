// Publish one message through amqplib with a header of every field-table
// type amqplib writes (for tests/test_poison_headers.py).
// usage: node publish.js URL EXCHANGE ROUTING_KEY BODY
const amqp = require('amqplib');

function nested(depth) {
  let value = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

async function main() {
  const [url, exchange, routingKey, body] = process.argv.slice(2);
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  const headers = {
    string: 'caf\u00e9', buffer: Buffer.from([0, 255]), null: null, true: true,
    double: 1.5, byte: -5, short: -300, int: -70000, long: 2 ** 40,
    array: [1, 'two', null], table: {inner: {deeper: 'yes'}},
    int8: {'!': 'int8', value: -1}, uint8: {'!': 'uint8', value: 255},
    int16: {'!': 'int16', value: -2}, uint16: {'!': 'uint16', value: 65535},
    int32: {'!': 'int32', value: -3}, uint32: {'!': 'uint32', value: 4294967295},
    int64: {'!': 'int64', value: -4}, float: {'!': 'float', value: 0.5},
    timestamp: {'!': 'timestamp', value: 1245283200},
    decimal: {'!': 'decimal', value: {places: 2, digits: 314}},
    deep: nested(200),
  };
  ch.publish(exchange, routingKey, Buffer.from(body), {headers, persistent: true});
  await ch.waitForConfirms();
  await conn.close();
}

main().catch((err) => { console.error(err); process.exit(1); });
