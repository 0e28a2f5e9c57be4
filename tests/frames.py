"""For the codec's tests: a frame's payload read back into txamqp's own payload
objects (Method, ContentHeader, Body, Heartbeat), to compare with what was
written. AMQClient itself reads frames with read_method and read_header."""

from txamqp.connection import Body, Heartbeat, Method

from amqp_support._codec import read_header, read_method


def unpack_payload(spec, kind, data):
    """The payload of one frame of type kind (1 method, 2 content header, 3 body, 8 heartbeat)."""
    if kind == 3:
        return Body(data)
    if kind == 8:
        return Heartbeat()
    if kind == 1:
        method, args = read_method(spec, data)
        return Method(method, *args)
    return read_header(spec, data)
