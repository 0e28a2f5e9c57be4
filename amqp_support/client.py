"""txamqp's AMQClient and TwistedDelegate, fixed for today's brokers.

What changes against txamqp 0.8.2, and why:
- frames are read and written by amqp_support.codec, so message bodies stay
  bytes (txamqp decodes UTF-8 body frames to str and then loses count);
- a frame reader that checks every frame and ends the connection with a
  reason instead of raising out of dataReceived or waiting forever;
- the reason a connection ended is kept and handed to everything still
  waiting on it, including consumer queues (txamqp closes them mute);
- a broker that answers with its own protocol header, or that hangs up
  during login, is reported as what it is;
- the client tells the broker its name and the capabilities its spec file
  has, so RabbitMQ sends a reason with a failed login and tells a consumer
  when it is cancelled; with 0-9-1 also publisher confirms and blocking;
- a fast path for the frames of every message: an incoming frame is handled
  as it comes (txamqp runs about 30 Deferreds, a lock and several generators
  per message), and a method without a response (basic.publish, basic.ack)
  is written at once, its frames in one write, instead of through
  inlineCallbacks and txamqp's outgoing queue; what reaches the delegate,
  the consumer queues and invoke's responses queue, and in which order, is
  what txamqp delivers;
- handlers for what txamqp's delegate has none for (a method without one
  ends the connection): basic.ack and basic.nack of publisher confirms,
  connection.blocked and connection.unblocked; basic.return goes to the
  channel's publisher (amqp_support.publish) when it has one.
"""

import platform
import sys
from time import time

from twisted.internet import defer
from twisted.python.failure import Failure
from txamqp import client, protocol, queue
from txamqp.connection import Body, Frame, Header, Heartbeat, Method
from txamqp.content import Content
from txamqp.message import Message

from amqp_support.codec import (FRAME_END, FRAME_HEADER, PAYLOAD_TYPES, PAYLOADS, FrameError, pack_frame,
                                unpack_payload)


class ProtocolRefused(Exception):
    """The broker answered our protocol header with the one it speaks."""

    def __init__(self, spec, header):
        super().__init__(spec, header)
        self.spec = spec
        self.header = bytes(header)


class CutMidFrame(Exception):
    """The connection ended in the middle of a frame: the broker went away
    while it was sending (a shutdown with deliveries on their way, a network
    cut). A lost connection like any other, not a protocol error."""


class LoginRefused(Exception):
    """The broker hung up between our credentials and its tune."""


class HeartbeatMissed(Exception):
    """Nothing from the broker for three heartbeat intervals."""


class ConsumerCancelled(Exception):
    """The broker cancelled a consumer (its queue was deleted, for one)."""


class UnexpectedMethod(Exception):
    """The broker sent a method that makes no sense where it came."""


class ReasonQueue(queue.TimeoutDeferredQueue):
    """A consumer queue whose get() fails with the reason it was closed."""

    reason = None

    def close(self, reason=None):
        if self.reason is None:
            self.reason = reason
        super().close()

    def _raise_if_closed(self, result, call_id):
        try:
            return super()._raise_if_closed(result, call_id)
        except queue.Closed:
            raise queue.Closed(self.reason) from None


class AMQChannel(protocol.AMQChannel):
    # What publishes on this channel (amqp_support.publish): the delegate
    # hands it the broker's basic.ack, basic.nack and basic.return.
    publisher = None
    partial = None  # [method, header, body chunks] of a message still coming in

    def do_close(self, reason):
        was_closed = self.closed
        super().do_close(reason)
        if not was_closed and self.publisher is not None:
            self.publisher.channel_closed(self.reason)

    def invoke(self, method, args, content=None):
        if method.responses:
            return self.invoke_and_wait(method, args, content)
        # Nothing to wait for (basic.publish, basic.ack, ...): write the
        # frames now, in one write, as txamqp's writer would have one by one.
        if self.closed:
            try:
                self._raise_closed(self.reason)
            except Exception:
                return defer.fail()
        frames = [Frame(self.id, Method(method, *args))]
        if method.content:
            self.write_content(method.klass, Content() if content is None else content, frames)
        self.client.send_frames(frames)
        return defer.succeed(None)

    def write_content(self, klass, content, frames):
        # txamqp's, into a list (or its outgoing queue); the body as one
        # frame when it fits, and b"" for no body. A larger body is cut
        # into views of it, not copies: a body may be hundreds of MiB.
        if isinstance(frames, list) and not content.children:
            body = content.body
            frames.append(Frame(self.id, Header(klass, 0, len(body), **content.properties)))
            chunk = self.client.MAX_LENGTH - 8
            if len(body) <= chunk:
                if body:
                    frames.append(Frame(self.id, Body(body)))
            else:
                view = memoryview(body)
                frames.extend(Frame(self.id, Body(view[i:i + chunk])) for i in range(0, len(body), chunk))
        else:
            super().write_content(klass, content, frames)

    @defer.inlineCallbacks
    def invoke_and_wait(self, method, args, content=None):
        reply = yield super().invoke(method, args, content)
        if reply is not None and reply.content is not None and reply.content.body == "":
            reply.content.body = b""  # basic.get-ok of an empty message
        return reply


def status(text):
    """A status line for the person running the script, on stderr."""
    print(text, file=sys.stderr, flush=True)


def has_method(spec, name):
    klass, method = name.split(".")
    return klass in spec.classes.byname and method in spec.classes.byname[klass].methods.byname


# RabbitMQ's extensions to AMQP 0-9-1, and the method each one needs in the
# spec file. Ask only for what the spec can decode: RabbitMQ sends
# connection.blocked to a client that asks for it, and an AMQP 0-8
# connection cannot carry it (RabbitMQ 3.10 drops that connection).
EXTENSIONS = {
    "publisher_confirms": "confirm.select",
    "basic.nack": "basic.nack",
    "connection.blocked": "connection.blocked",
}


FRAME_MAX = 131072  # the largest frame we take: RabbitMQ's default
FRAME_END_BYTE = bytes([FRAME_END])


class Delegate(client.TwistedDelegate):
    def connection_start(self, ch, msg):
        capabilities = {"authentication_failure_close": True, "consumer_cancel_notify": True}
        capabilities.update({name: True for name, method in EXTENSIONS.items()
                             if has_method(self.client.spec, method)})
        properties = {
            "product": "txamqp example",
            "platform": "Python %s" % platform.python_version(),
            "capabilities": capabilities,
        }
        self.client.logging_in = True
        ch.connection_start_ok(client_properties=properties, mechanism=self.client.mechanism,
                               response=self.client.response, locale=self.client.locale)

    def connection_tune(self, ch, msg):
        self.client.logging_in = False
        # The smaller of the broker's frame size and ours; 0 means no limit.
        frame_max = min(msg.frame_max or FRAME_MAX, FRAME_MAX)
        if frame_max < 4096:
            self.client.fail(FrameError("the broker proposed a frame size of %d bytes, below"
                                        " AMQP's minimum of 4096" % frame_max))
            return
        self.client.MAX_LENGTH = frame_max
        ch.connection_tune_ok(channel_max=msg.channel_max, frame_max=frame_max,
                              heartbeat=self.client.heartbeatInterval)
        self.client.started.fire()

    def basic_deliver(self, ch, msg):
        self.client.consumer_queue(msg.consumer_tag).put(msg)

    def basic_ack(self, ch, msg):
        self._publisher(ch, msg).settle(msg.delivery_tag, msg.multiple, accepted=True)

    def basic_nack(self, ch, msg):
        self._publisher(ch, msg).settle(msg.delivery_tag, msg.multiple, accepted=False)

    def basic_return_(self, ch, msg):
        if ch.publisher is not None:
            ch.publisher.returned(msg)
        else:
            super().basic_return_(ch, msg)

    @staticmethod
    def _publisher(ch, msg):
        # From the broker, basic.ack and basic.nack are publisher confirms:
        # they come only on a channel in confirm mode.
        if getattr(ch.publisher, "settle", None) is None:
            raise UnexpectedMethod("the broker sent basic.%s on channel %d, which is not in"
                                   " confirm mode" % (msg.method.name, ch.id))
        return ch.publisher

    def connection_blocked(self, ch, msg):
        # RabbitMQ stops reading from connections that publish while it is
        # low on memory or disk; it says so to clients that asked.
        self.client.blocked = msg.reason or "no reason given"
        status("The broker blocked the connection (%s); waiting until it unblocks."
               % self.client.blocked)

    def connection_unblocked(self, ch, msg):
        self.client.blocked = None
        status("The broker unblocked the connection; going on.")

    def basic_cancel(self, ch, msg):
        self.client.queues.get(msg.consumer_tag, ReasonQueue()).close(
            ConsumerCancelled("the broker cancelled consumer %r (was its queue deleted?)"
                              % msg.consumer_tag))


class AMQClient(protocol.AMQClient):
    """txamqp's client with byte-exact frames and failures that explain themselves."""

    channelClass = AMQChannel
    logging_in = False
    dispatch_failed = False
    reason = None  # why the connection ended, once it has
    blocked = None  # the broker's reason, while it blocks the connection

    def __init__(self, spec, vhost, heartbeat=0, clock=None):
        super().__init__(Delegate(), vhost, spec, heartbeat=heartbeat, clock=clock)
        self._buffer = bytearray()
        self._frames_seen = False
        # Per channel, the content still to come: None for a content header,
        # else the body bytes its header announced and we have not seen yet.
        self._content_due = {}

    def send_init_string(self):
        if (self.spec.major, self.spec.minor) == (0, 9):
            self.transport.write(b"AMQP\x00\x00\x09\x01")  # 0-9-1's header
        else:
            super().send_init_string()

    def send_frame(self, frame):
        self.send_frames([frame])

    def send_frames(self, frames):
        """Write these frames to the broker at once."""
        if self.heartbeatInterval > 0 and frames[0].payload.type != Frame.HEARTBEAT:
            self.reschedule_send_heartbeat()
        try:
            pieces = []
            for frame in frames:
                payload = frame.payload
                if type(payload) is Body and len(payload.content) > 4096:
                    # A frame of a large body: its bytes as they are, copied
                    # only once, by the join below (Twisted writes only bytes).
                    size = len(payload.content)
                    pieces += (FRAME_HEADER.pack(PAYLOAD_TYPES[Body], frame.channel, size),
                               payload.content, FRAME_END_BYTE)
                else:
                    pieces.append(pack_frame(frame.channel, payload))
            data = b"".join(pieces)
        except Exception as e:
            self.fail(e)
        else:
            self.transport.write(data)

    # Incoming frames. txamqp hands each frame to an inlineCallbacks
    # (process_frame) that takes a lock to find its channel, puts it in a
    # DeferredQueue, and has another inlineCallbacks per method (dispatch,
    # read_content) read the method's content from there: about 30 Deferreds
    # per message. Here a frame is handled as it comes, with the same
    # outcome: a response to a call (queue.declare-ok, basic.get-ok and its
    # content, ...) goes to the channel's responses queue, where txamqp's
    # invoke waits for it; any other method, with its content once whole,
    # goes to the delegate as (channel, Message), in the order it came.

    def frame_received(self, frame):
        ch = self.channels.get(frame.channel)
        if ch is None:  # channel 0; check_sequence allows no other unknown one
            ch = self.channels[frame.channel] = self.channelFactory(frame.channel, self.outgoing, self)
        payload = frame.payload
        kind = type(payload)
        if kind is Method:
            method = payload.method
            if method.response:
                ch.partial = None
                ch.queue = ch.responses
                ch.responses.put(frame)
            elif method.content:
                ch.partial = [payload, None, []]
            else:
                self.deliver(ch, Message(method, payload.args, None))
        elif kind is Heartbeat:
            self.last_heartbeat_received = time()
        elif ch.partial is None:
            ch.queue.put(frame)  # the content of a response
        elif kind is Header:
            ch.partial[1] = payload
            if not payload.size:
                self.deliver_content(ch)
        else:
            partial = ch.partial
            partial[2].append(payload.content)
            partial[1].size -= len(payload.content)  # check_sequence: never below 0
            if not partial[1].size:
                self.deliver_content(ch)

    def deliver_content(self, ch):
        (method, header, chunks), ch.partial = ch.partial, None
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        content = Content(body, [], dict(header.properties))
        # None, or what in the properties could not be decoded (they hold
        # the rest): the message is delivered all the same.
        content.property_error = getattr(header, "property_error", None)
        self.deliver(ch, Message(method.method, method.args, content))

    def deliver(self, ch, msg):
        if self.dispatch_failed:
            return  # as txamqp: after a failed dispatch, nothing more is dispatched
        try:
            if ch.closed:
                raise queue.Closed()
            self.delegate.dispatch(ch, msg)
        except Exception:
            self.dispatch_failed = True
            self.close(Failure())

    def dataReceived(self, data):
        buf = self._buffer
        buf += data
        if not self._frames_seen and buf[:4] == b"AMQP"[:len(buf)]:
            if len(buf) >= 8:
                self.fail(ProtocolRefused(self.spec, buf[:8]))
            return
        start = 0
        limit = max(self.MAX_LENGTH, 4096)
        try:
            # 7 bytes tell a frame's type, channel and size: check them at once.
            while len(buf) - start >= 7 and self.reason is None:
                kind, channel, size = FRAME_HEADER.unpack_from(buf, start)
                if kind not in PAYLOADS:
                    raise FrameError("unknown frame type %d" % kind)
                if size + 8 > limit:
                    raise FrameError("frame of %d bytes, over the agreed maximum of %d" % (size + 8, limit))
                end = start + 7 + size
                if len(buf) <= end:
                    break
                if buf[end] != FRAME_END:
                    raise FrameError("frame does not end with 0xCE but with 0x%02X" % buf[end])
                payload = unpack_payload(self.spec, kind, bytes(buf[start + 7:end]))
                start = end + 1
                self._frames_seen = True
                self.check_sequence(channel, payload)
                self.frame_received(Frame(channel, payload))
        except FrameError as e:
            self.fail(e)
        del buf[:start]
        if start and self.heartbeatInterval > 0 and not self.closed:
            self.reschedule_check_heartbeat()  # once per read, not per frame

    def check_heartbeat(self):
        self.fail(HeartbeatMissed("no heartbeat from the broker for %d s"
                                  % (self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)))

    def check_sequence(self, channel, payload):
        """A frame must come where AMQP puts it: a method that carries content
        (basic.deliver, say) is followed on its channel by one content header
        and then body frames of exactly the size the header announced, nothing
        else between. txamqp trusts the broker here, and fails or loses count
        in ways no one sees."""
        if channel != 0 and channel not in self.channels:
            raise FrameError("frame on channel %d, which the client never opened" % channel)
        due = self._content_due
        if isinstance(payload, Method):
            if channel in due:
                raise FrameError("method %s.%s on channel %d in the middle of a message"
                                 % (payload.method.klass.name, payload.method.name, channel))
            if payload.method.content:
                due[channel] = None
        elif isinstance(payload, Header):
            if channel not in due or due[channel] is not None:
                raise FrameError("content header on channel %d without a method that carries content"
                                 % channel)
            if payload.weight != 0:
                raise FrameError("content header with %d child contents" % payload.weight)
            if payload.size:
                due[channel] = payload.size
            else:
                del due[channel]
        elif isinstance(payload, Body):
            if due.get(channel) is None:
                raise FrameError("message body on channel %d without a content header" % channel)
            due[channel] -= len(payload.content)
            if due[channel] < 0:
                raise FrameError("message body on channel %d longer than its content header said"
                                 " (%d bytes over)" % (channel, -due[channel]))
            if due[channel] == 0:
                del due[channel]

    def fail(self, reason):
        """End the connection now, for this reason."""
        if self.reason is None:
            self.reason = Failure(reason)
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason):
        if self.reason is None:
            if self._buffer:
                reason = Failure(CutMidFrame("the connection ended in the middle of a frame"
                                             " (%d bytes of it came)" % len(self._buffer)))
            elif self.logging_in:
                reason = Failure(LoginRefused())
            self.reason = reason
        super().connectionLost(self.reason)

    def close(self, reason=None, within=0):
        # txamqp calls this with the failure of a frame it could not dispatch,
        # then throws that failure away: keep it.
        if isinstance(reason, Failure) and self.reason is None:
            self.reason = reason
        return super().close(reason, within)

    def do_close(self, reason):
        if self.reason is None:
            self.reason = reason
        for ch in list(self.channels.values()):
            ch.close(self.reason)
        for q in self.queues.values():
            q.close(self.reason)
        self.delegate.close(self.reason)

    def channel_failed(self, channel, reason):
        # The broker closed a channel. These scripts use one channel, so
        # that ends the connection, and with it the consumer.
        self.close(reason.value)

    def consumer_queue(self, key):
        """The queue txamqp puts a consumer's deliveries in."""
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = ReasonQueue(clock=self.clock)
        return q

    def queue(self, key):
        return defer.succeed(self.consumer_queue(key))


__all__ = ["AMQClient", "ConsumerCancelled", "CutMidFrame", "HeartbeatMissed", "LoginRefused", "ProtocolRefused",
           "UnexpectedMethod"]
