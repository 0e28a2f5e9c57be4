"""txamqp's AMQClient, AMQChannel and TwistedDelegate, fixed for today's brokers.

A program uses these exactly as txamqp's own (conn.authenticate, conn.channel,
chan.basic_publish, conn.queue, ...). Some overrides are of txamqp's internals,
so this module is for txamqp 0.8.2 only and refuses to load with any other
(UnsupportedTxamqp). Each override, why, and the test that fails on stock
txamqp: docs/how-it-is-built.md, "What replaces txamqp". Sections marked
"Speed only:" change no behaviour; the rest are correctness fixes.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Generator, Iterable, Sequence
from time import time
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
import txamqp
from txamqp import client, message, protocol, queue
from txamqp.connection import Body, Frame, Header, Method
from txamqp.content import Content

from amqp_support._codec import (CLASS_METHOD, FRAME_END, FRAME_HEADER, PAYLOAD_TYPES, PAYLOADS, ContentHeader,
                                 DeliveryFields, MessageFrames, Spec, SpecClass, SpecMethod, pack_frame, read_header,
                                 read_method)
from amqp_support._errors import (ConsumerCancelled, CutMidFrame, FrameError, HeartbeatMissed, LoginRefused,
                                  ProtocolRefused, UnexpectedMethod, UnsupportedTxamqp)
from amqp_support._protocol import protocol_header
from amqp_support._status import log as status_log

if TYPE_CHECKING:
    from amqp_support._publish import Outbox
    from amqp_support._url import BrokerURL

# Why a connection, channel or queue ended: a Failure, an exception, or the broker's close (a Message).
Reason: TypeAlias = Failure | BaseException | message.Message


TXAMQP_VERSION = "0.8.2"  # the release whose internals this module overrides


def check_txamqp(installed: str) -> None:
    if installed != TXAMQP_VERSION:
        raise UnsupportedTxamqp(
            "amqp_support works with txamqp %s only (it overrides that release's internals),"
            " and txamqp %s is installed: pip install txamqp==%s"
            % (TXAMQP_VERSION, installed, TXAMQP_VERSION))


def installed_txamqp() -> str:
    """The release of txamqp imported: its dist-info folder beside it says so at once;
    importlib.metadata (milliseconds of start-up) is asked only when that is not 0.8.2's."""
    site = os.path.dirname(os.path.dirname(txamqp.__file__))
    if os.path.isdir(os.path.join(site, "txamqp-%s.dist-info" % TXAMQP_VERSION)):
        return TXAMQP_VERSION
    from importlib import metadata
    try:
        return metadata.version("txamqp")
    except metadata.PackageNotFoundError:
        return "of an unknown version"


check_txamqp(installed_txamqp())


class ReasonQueue(queue.TimeoutDeferredQueue):
    """A consumer queue whose get() fails with the reason it was closed."""

    reason: Reason | None = None

    def close(self, reason: Reason | None = None) -> None:
        if self.reason is None:
            self.reason = reason
        super().close()

    def put_all(self, items: Sequence[Message]) -> None:
        """Put several at once: whoever waits gets the first with the others in
        `pending` already, so a consumer can tell the last of a batch (pending is empty)."""
        if self.waiting:
            self.pending.extend(items[1:])
            self.waiting.pop(0).callback(items[0])
        else:
            self.pending.extend(items)

    def get(self, timeout: float | None = None) -> Deferred[Message]:
        # Speed only: a message that is here already, as a fired Deferred,
        # without the end-of-queue check txamqp adds to every get.
        if self.pending and self.pending[0] is not self.END:
            return defer.succeed(self.pending.pop(0))
        return super().get(timeout)

    def _raise_if_closed(self, result: object, call_id: IDelayedCall | None) -> Message:
        try:
            return super()._raise_if_closed(result, call_id)
        except queue.Closed:
            raise queue.Closed(self.reason) from None


class Message(message.Message):
    """txamqp's Message (msg.delivery_tag, msg.content, ...). Speed only: txamqp's
    finds a field by its name and position on every access (the three of
    __init__ too); this one reads `positions`, {python name of a field: its
    place}, made once per method by the connection."""

    content: ReceivedContent | None
    _positions: dict[str, int]

    def __init__(self, method: SpecMethod, fields: Sequence[Any], content: ReceivedContent | None = None,
                 positions: dict[str, int] | None = None) -> None:
        if positions is None:
            positions = {name: method.fields.index(field) for name, field in method.fields.bypyname.items()}
        attrs = self.__dict__  # txamqp's __setattr__ sets fields: these are not
        attrs["method"], attrs["fields"], attrs["content"], attrs["_positions"] = method, fields, content, positions

    def __getattr__(self, attr: str) -> Any:
        # Only for the method's fields: what __init__ set is in __dict__.
        try:
            return self.fields[self._positions[attr]]
        except KeyError:
            raise AttributeError(attr) from None


class ReceivedContent(Content):
    """A message's content as received: txamqp's Content, and property_error:
    what of the properties could not be decoded, if anything (they hold the rest)."""

    body: bytes
    properties: dict[str, Any]

    def __init__(self, body: bytes, properties: dict[str, Any], property_error: str | None = None) -> None:
        # Speed only: txamqp's Content.__init__ sets the first three so, in three more calls.
        self.body, self.properties, self.property_error = body, properties, property_error
        self.children: list[Content] = []


class Incoming:
    """A message coming in on a channel: its method, content header, and body until `due` bytes have come."""

    __slots__ = ("method", "args", "header", "chunks", "due")

    def __init__(self, method: SpecMethod, args: list[Any]) -> None:
        self.method, self.args = method, args
        self.header: ContentHeader | None = None
        self.chunks: list[bytes] = []
        self.due = 0


class AMQChannel(protocol.AMQChannel):
    client: AMQClient

    def __init__(self, id: int, outgoing: object, client: AMQClient) -> None:
        super().__init__(id, outgoing, client)
        self.consumer_tags: set[str] = set()  # the consumers started on this channel
        self.publisher: Outbox | None = None  # what publishes here: see report_to

    def report_to(self, publisher: Outbox) -> None:
        """From now on, the broker's basic.ack, basic.nack and basic.return here go to publisher."""
        self.publisher = publisher

    def do_close(self, reason: Reason) -> None:
        was_closed = self.closed
        super().do_close(reason)
        if was_closed:
            return
        if self.publisher is not None:
            self.publisher.channel_closed(self.reason)
        # A consumer ends with its channel: whoever waits for its messages hears why.
        for tag in self.consumer_tags:
            self.client.consumer_queue(tag).close(self.reason)

    def invoke(self, method: SpecMethod, args: tuple[Any, ...], content: Content | None = None) -> Deferred[Any]:
        if self.closed:
            try:
                self._raise_closed(self.reason)
            except Exception:  # noqa: BLE001 (what txamqp raises for a closed channel, as a failure)
                return defer.fail()
        if method.content and content is not None and not method.responses:
            # Speed only: basic.publish of an ordinary message, the quick way.
            data = self.client.message_frames.message(self.id, method, args, content)
            if data is not None:
                self.client.write_soon(data)
                return defer.succeed(None)
        frames = [Frame(self.id, Method(method, *args))]
        if method.content:
            self.content_frames(method.klass, Content() if content is None else content, frames)
        self.client.send_frames(frames)
        if not method.responses or self.nowait(method, args):
            return defer.succeed(None)
        return self.response(method)

    @staticmethod
    def nowait(method: SpecMethod, args: tuple[Any, ...]) -> bool:
        # As txamqp: a method waits for its response unless its field named
        # "nowait" is set (a spec file must call it that, not "no-wait").
        field = method.fields.byname.get("nowait")
        return field is not None and args[method.fields.index(field)]

    def content_frames(self, klass: SpecClass, content: Content, frames: list[Frame]) -> None:
        """A message's content header and body frames, onto frames: the body in as few as
        the frame size allows, each a view of it, not a copy (it may be hundreds of MiB)."""
        if content.children:
            raise ValueError("txamqp contents with child contents are not supported")
        body = content.body
        if isinstance(body, str):
            body = body.encode("utf-8")  # sized in bytes, not characters
        frames.append(Frame(self.id, Header(klass, 0, len(body), **content.properties)))
        chunk = self.client.MAX_LENGTH - 8
        if len(body) <= chunk:
            frames.extend([Frame(self.id, Body(body))] if body else [])
        else:
            view = memoryview(body)
            frames.extend(Frame(self.id, Body(view[i:i + chunk])) for i in range(0, len(body), chunk))

    @defer.inlineCallbacks
    def response(self, method: SpecMethod) -> Generator[Deferred[Any], Any, Message]:
        try:
            msg = yield self.responses.get()
        except queue.Closed:
            if self.closed:
                self._raise_closed(self.reason)
            raise
        if msg.method not in method.responses:
            raise UnexpectedMethod("the broker answered %s.%s with %s.%s" % (
                method.klass.name, method.name, msg.method.klass.name, msg.method.name))
        if method.klass.name == "basic" and method.name == "consume":
            self.consumer_tags.add(msg.consumer_tag)
        return msg


def has_method(spec: Spec, name: str) -> bool:
    klass, method = name.split(".")
    return klass in spec.classes.byname and method in spec.classes.byname[klass].methods.byname


def has_confirms(spec: Spec) -> bool:
    """Whether the spec file has publisher confirms (else: transactions)."""
    return has_method(spec, EXTENSIONS["publisher_confirms"])


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
    client: AMQClient

    def connection_start(self, ch: AMQChannel, msg: Message) -> None:
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

    def connection_tune(self, ch: AMQChannel, msg: Message) -> None:
        self.client.logging_in = False
        # The smaller of the broker's frame size and ours; 0 means no limit.
        frame_max = min(msg.frame_max or FRAME_MAX, FRAME_MAX)
        if frame_max < 4096:
            self.client.fail(FrameError("the broker proposed a frame size of %d bytes, below"
                                        " AMQP's minimum of 4096" % frame_max))
            return
        self.client.MAX_LENGTH = frame_max
        self.client.message_frames = MessageFrames(frame_max)
        ch.connection_tune_ok(channel_max=msg.channel_max, frame_max=frame_max,
                              heartbeat=self.client.heartbeatInterval)
        self.client.started.fire()

    def basic_ack(self, ch: AMQChannel, msg: Message) -> None:
        self._publisher(ch, msg).settle(msg.delivery_tag, msg.multiple, accepted=True)

    def basic_nack(self, ch: AMQChannel, msg: Message) -> None:
        self._publisher(ch, msg).settle(msg.delivery_tag, msg.multiple, accepted=False)

    def basic_return_(self, ch: AMQChannel, msg: Message) -> None:
        if ch.publisher is not None:
            ch.publisher.returned(msg)
        else:
            super().basic_return_(ch, msg)

    @staticmethod
    def _publisher(ch: AMQChannel, msg: Message) -> Outbox:
        # From the broker, basic.ack and basic.nack are publisher confirms.
        if ch.publisher is None:
            raise UnexpectedMethod("the broker sent basic.%s on channel %d, which is not in"
                                   " confirm mode" % (msg.method.name, ch.id))
        return ch.publisher

    def connection_blocked(self, ch: AMQChannel, msg: Message) -> None:
        # RabbitMQ stops reading from connections that publish while it is
        # low on memory or disk; it says so to clients that asked.
        status_log.info("The broker blocked the connection ({reason}); waiting until it unblocks.",
                        reason=msg.reason or "no reason given")

    def connection_unblocked(self, ch: AMQChannel, msg: Message) -> None:
        status_log.info("The broker unblocked the connection; going on.")

    def basic_cancel(self, ch: AMQChannel, msg: Message) -> None:
        self.client.consumer_queue(msg.consumer_tag).close(
            ConsumerCancelled("basic.cancel of consumer %r (was its queue deleted, or a message"
                              " held past the broker's consumer timeout?)" % msg.consumer_tag))


class AMQClient(protocol.AMQClient):
    """txamqp's client with byte-exact frames and failures that explain themselves.

    login_timeout: seconds from the TCP connection to the end of authenticate(),
    past which the connection ends with defer.TimeoutError. opened fires (and
    logged_in is true) once authenticate() has succeeded.
    """

    channelClass = AMQChannel
    logging_in = False  # between connection.start-ok and connection.tune
    logged_in = False
    dispatch_failed = False
    reason: Reason | None = None  # why the connection ended, once it has
    transport_lost = False

    def __init__(self, spec: Spec, heartbeat: int = 0, clock: IReactorTime | None = None,
                 login_timeout: float | None = None) -> None:
        super().__init__(Delegate(), "/", spec, heartbeat=heartbeat, clock=clock)
        self.broker: BrokerURL | None = None  # once connected_to() says
        # txamqp's writer and dispatch queues: unused, write() and receive() replace them.
        self.outgoing = self.work = None
        self._positions: dict[SpecMethod, dict[str, int]] = {}  # each method's, for Message
        self.login_timeout = login_timeout
        self._login_timer: IDelayedCall | None = None
        self.opened: Deferred[AMQClient] = defer.Deferred()
        self._buffer = b""
        self._frames_seen = False
        self._incoming: dict[int, Incoming] = {}  # channel: the message coming in on it
        self._arrivals: dict[str, list[Message]] = {}  # the deliveries of this read, by consumer tag
        self._delivery = spec.classes.byname["basic"].methods.byname["deliver"]
        self._delivery_id = CLASS_METHOD.pack(self._delivery.klass.id << 16 | self._delivery.id)
        self._delivery_fields = DeliveryFields([f.type for f in self._delivery.fields])  # for read_deliveries()
        self._delivery_positions = self._positions[self._delivery] = Message(self._delivery, [])._positions
        self.message_frames = MessageFrames(self.MAX_LENGTH)
        self._quiet = True  # nothing sent since the heartbeat timer last ran
        self._unsent: list[bytes] = []  # what write_soon() holds until the reactor turns

    def connected_to(self, broker: BrokerURL) -> None:
        """This connection goes to broker: authenticate() opens its vhost; log in with its credentials."""
        self.broker = broker
        self.vhost = broker.vhost

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.login_timeout:
            self._login_timer = self.clock.callLater(
                self.login_timeout, self.fail, defer.TimeoutError("no answer in time"))

    @defer.inlineCallbacks
    def authenticate(self, username: str, password: str, mechanism: str = "AMQPLAIN",
                     locale: str = "en_US") -> Generator[Deferred[Any], Any, None]:
        # connection.start-ok carries the credentials, connection.tune-ok
        # agrees on frame size and heartbeat, connection.open picks the vhost.
        yield super().authenticate(username, password, mechanism, locale)
        self._stop_login_timer()
        self.logged_in = True
        self.opened.callback(self)

    def _stop_login_timer(self) -> None:
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None

    def send_init_string(self) -> None:
        # txamqp writes AMQP 0-9-1's header wrong.
        self.transport.write(protocol_header(self.spec))

    def send_frame(self, frame: Frame) -> None:
        self.send_frames([frame])

    def send_frames(self, frames: Iterable[Frame]) -> None:
        """Write these frames to the broker at once."""
        try:
            pieces: list[bytes | memoryview] = []
            for frame in frames:
                payload = frame.payload
                if type(payload) is Body and len(payload.content) > 4096:
                    # Speed only: a large body frame's bytes as they are, copied
                    # once, by the join below (Twisted writes only bytes).
                    size = len(payload.content)
                    pieces += (FRAME_HEADER.pack(PAYLOAD_TYPES[Body], frame.channel, size),
                               payload.content, FRAME_END_BYTE)
                else:
                    pieces.append(pack_frame(frame.channel, payload))
            data = b"".join(pieces)
        except Exception as e:  # noqa: BLE001 (a frame that cannot be encoded ends the connection, saying why)
            self.fail(e)
        else:
            self.write(data)

    def write(self, data: bytes) -> None:
        """The one write path: whole frames, to the broker (after what write_soon() holds)."""
        if self._unsent:
            self.flush()
        self._quiet = False
        self.transport.write(data)

    def write_soon(self, data: bytes) -> None:
        """Speed only: whole frames, to the broker once the reactor turns: one write for the messages
        published between two turns (a write costs more than encoding a small message)."""
        if not self._unsent:
            self.clock.callLater(0, self.flush)
        self._unsent.append(data)

    def flush(self) -> None:
        """Speed only: write what write_soon() holds."""
        if self._unsent and not self.transport_lost:
            self._quiet = False
            self.transport.write(b"".join(self._unsent))
        self._unsent.clear()

    # Speed only: heartbeats. Any frame tells the broker we are alive; txamqp restarts a timer on
    # every frame it sends (a cancelled and a new delayed call per message), this one runs every
    # half interval and sends a heartbeat if nothing went out since it last ran.

    def reschedule_send_heartbeat(self) -> None:
        if self.heartbeatInterval > 0 and not self.sendHB.running:
            self.sendHB.start(self.heartbeatInterval / 2, now=False)

    def send_heartbeat(self) -> None:
        if self._quiet:
            super().send_heartbeat()
        self._quiet = True

    # Incoming frames.

    def dataReceived(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        self._buffer = data
        if not self._frames_seen and data[:4] == b"AMQP"[:len(data)]:
            if len(data) >= 8:
                self.fail(ProtocolRefused(self.spec, data[:8]))
            return
        start = 0
        limit = max(self.MAX_LENGTH, 4096)
        try:
            # 7 bytes tell a frame's type, channel and size: check them at once.
            while len(data) - start >= 7 and self.reason is None:
                kind, channel, size = FRAME_HEADER.unpack_from(data, start)
                if kind not in PAYLOADS:
                    raise FrameError("unknown frame type %d" % kind)
                if size + 8 > limit:
                    raise FrameError("frame of %d bytes, over the agreed maximum of %d" % (size + 8, limit))
                end = start + 7 + size
                if len(data) <= end:
                    break
                if data[end] != FRAME_END:
                    raise FrameError("frame does not end with 0xCE but with 0x%02X" % data[end])
                self._frames_seen = True
                if kind == 1 and data[start + 7:start + 11] == self._delivery_id:
                    after = self.read_deliveries(data, channel, start, limit)
                    if after != start:
                        start = after
                        continue
                self.receive(channel, kind, data[start + 7:end])
                start = end + 1
        except FrameError as e:
            self.fail(e)
        self._buffer = data[start:]
        self.hand_over_arrivals()
        if start and self.heartbeatInterval > 0 and not self.closed:
            self.reschedule_check_heartbeat()  # once per read, not per frame

    def read_deliveries(self, data: bytes, channel: int, start: int, limit: int) -> int:
        """Speed only: the basic.deliver messages on channel from start on, each a method
        frame followed by its content header and its body in one frame, at once, into this
        read's arrivals (as deliver() puts them); where the first frame that is not one of
        them begins (start if there is none). A frame not all there, another channel or
        method, a body in several frames, fields that do not fit their frame, a channel
        closed: receive() takes the frames from there one by one, and says what is wrong."""
        ch = self.channels.get(channel)
        if ch is None or ch.closed or self.dispatch_failed or channel in self._incoming:
            return start
        total = len(data)
        unpack = FRAME_HEADER.unpack_from
        decode = self._delivery_fields.decode
        spec, delivery, delivery_id = self.spec, self._delivery, self._delivery_id
        positions, arrivals = self._delivery_positions, self._arrivals
        while total - start >= 7:
            kind, on, size = unpack(data, start)
            end = start + 7 + size  # the method frame's end octet
            if kind != 1 or on != channel or size + 8 > limit or total - end < 8 or data[end] != FRAME_END \
                    or data[start + 7:start + 11] != delivery_id:
                break
            kind, on, size = unpack(data, end + 1)
            after = end + 9 + size  # after the header frame
            if kind != 2 or on != channel or size + 8 > limit or total < after or data[after - 1] != FRAME_END:
                break
            args = decode(data, start + 11, end)
            if args is None:
                break
            header = read_header(spec, data[end + 8:after - 1])
            if header.weight:
                break
            body = b""
            if header.size:
                if total - after < 7:
                    break
                kind, on, size = unpack(data, after)
                if kind != 3 or on != channel or size != header.size or size + 8 > limit \
                        or total < after + 8 + size or data[after + 7 + size] != FRAME_END:
                    break
                body, after = data[after + 7:after + 7 + size], after + 8 + size
            msg = Message(delivery, args, ReceivedContent(body, header.properties, header.property_error), positions)
            arrivals.setdefault(args[0], []).append(msg)  # args[0]: its consumer tag, as deliver() does
            start = after
        return start

    def receive(self, channel: int, kind: int, payload: bytes) -> None:
        """One frame, checked: a method that carries content (basic.deliver, say) is
        followed on its channel by one content header, then body frames of exactly
        the size it announced, nothing else between (txamqp trusts the broker)."""
        if kind == 1:
            method, args = read_method(self.spec, payload)
        elif kind == 2:
            header = read_header(self.spec, payload)
        ch = self.channels.get(channel)
        if ch is None:
            if channel != 0:
                raise FrameError("frame on channel %d, which the client never opened" % channel)
            ch = self.channels[0] = self.channelFactory(0, self.outgoing, self)
        incoming = self._incoming.get(channel)
        if kind == 1:
            if incoming is not None:
                raise FrameError("method %s.%s on channel %d in the middle of a message"
                                 % (method.klass.name, method.name, channel))
            if method.content:
                self._incoming[channel] = Incoming(method, args)
            else:
                self.deliver(ch, self.message(method, args, None))
        elif kind == 2:
            if incoming is None or incoming.header is not None:
                raise FrameError("content header on channel %d without a method that carries content"
                                 % channel)
            if header.weight != 0:
                raise FrameError("content header with %d child contents" % header.weight)
            incoming.header, incoming.due = header, header.size
            if not incoming.due:
                self.deliver_content(ch)
        elif kind == 3:
            if incoming is None or incoming.header is None:
                raise FrameError("message body on channel %d without a content header" % channel)
            incoming.due -= len(payload)
            if incoming.due < 0:
                raise FrameError("message body on channel %d longer than its content header said"
                                 " (%d bytes over)" % (channel, -incoming.due))
            incoming.chunks.append(payload)
            if not incoming.due:
                self.deliver_content(ch)
        else:  # Heartbeat
            self.last_heartbeat_received = time()

    def deliver_content(self, ch: AMQChannel) -> None:
        incoming = self._incoming.pop(ch.id)
        chunks = incoming.chunks
        header = incoming.header  # its own properties dict: the header is dropped here
        assert header is not None  # receive() calls this once the header came
        content = ReceivedContent(chunks[0] if len(chunks) == 1 else b"".join(chunks), header.properties,
                                  header.property_error)
        self.deliver(ch, self.message(incoming.method, incoming.args, content))

    def message(self, method: SpecMethod, args: Sequence[Any], content: ReceivedContent | None) -> Message:
        positions = self._positions.get(method)
        msg = Message(method, args, content, positions)
        if positions is None:
            self._positions[method] = msg._positions
        return msg

    def deliver(self, ch: AMQChannel, msg: Message) -> None:
        """A delivery to its consumer's queue with the others of this read, a response
        to the call waiting for it (queue.declare-ok, ...), any other method to the
        delegate, in the order they came."""
        method = msg.method
        if method is self._delivery and not ch.closed and not self.dispatch_failed:
            # Speed only: at the end of the read (or before the next method that is not
            # a delivery) hand_over_arrivals() puts the deliveries into their queues.
            self._arrivals.setdefault(msg.consumer_tag, []).append(msg)
            return
        if self._arrivals and method is not self._delivery:  # the deliveries that came first go first
            self.hand_over_arrivals()
        if method.response:
            ch.responses.put(msg)
            return
        if self.dispatch_failed:
            return  # as txamqp: after a failed dispatch, nothing more is dispatched
        try:
            if ch.closed:
                raise queue.Closed()
            self.delegate.dispatch(ch, msg)
        except Exception:  # noqa: BLE001 (as txamqp: a failed dispatch ends the connection, kept as its reason)
            self.dispatch_failed = True
            self.close(Failure())

    def hand_over_arrivals(self) -> None:
        arrivals, self._arrivals = self._arrivals, {}
        for tag, msgs in arrivals.items():
            self.consumer_queue(tag).put_all(msgs)

    def check_heartbeat(self) -> None:
        self.fail(HeartbeatMissed("no heartbeat from the broker for %d s"
                                  % (self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)))

    def fail(self, reason: BaseException) -> None:
        """End the connection now, for this reason."""
        if self.reason is None:
            self.reason = Failure(reason)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now, unless it is gone already."""
        if self.transport is not None and not self.transport_lost:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.transport_lost = True
        self._stop_login_timer()
        if self.reason is None:
            if self._buffer:
                reason = Failure(CutMidFrame("the connection ended in the middle of a frame"
                                             " (%d bytes of it came)" % len(self._buffer)))
            elif self.logging_in:
                reason = Failure(LoginRefused())
            self.reason = reason
        super().connectionLost(self.reason)

    def close(self, reason: Reason | None = None, within: float = 0) -> Deferred[None]:
        # deliver() calls this with the failure of a dispatch, as txamqp does,
        # and txamqp's close() throws that failure away: keep it.
        if isinstance(reason, Failure) and self.reason is None:
            self.reason = reason
        return super().close(reason, within)

    def do_close(self, reason: Reason) -> None:
        if self.reason is None:
            self.reason = reason
        self.hand_over_arrivals()
        for ch in list(self.channels.values()):
            ch.close(self.reason)
        for q in self.queues.values():
            q.close(self.reason)
        self.delegate.close(self.reason)

    def consumer_queue(self, key: str) -> ReasonQueue:
        """The queue txamqp puts a consumer's deliveries in."""
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = ReasonQueue(clock=self.clock)
        return q

    def queue(self, key: str) -> Deferred[ReasonQueue]:
        return defer.succeed(self.consumer_queue(key))


