"""A small library that makes txamqp 0.8.2 safe to use against today's brokers.

It knows nothing of a command line: it takes explicit values, raises the
exceptions of errors.py, and reports through twisted.logger (status.py),
never on stdout or stderr. One job per module, lowest first:

    errors.py    every exception it raises
    status.py    status lines, as twisted.logger events
    spec.py      a spec file into txamqp's spec objects, each method compiled once
    codec.py     frames to bytes and back, byte for byte
    client.py    txamqp's AMQClient with the fixes a real broker needs
    url.py       BrokerURL: where to connect, from an amqp:// or amqps:// URL
    endpoint.py  where the bytes go: TCP or verified TLS, brokers in turn
    explain.py   any failure in one line
    publish.py   Outbox: what the broker has taken, sent again after a reconnect
    service.py   AMQPService: run a conversation on each new connection
"""
