"""Publishing that ends knowing what the broker has taken, and that loses
nothing when the connection does.

The broker says it has taken a message in one of two ways: with publisher
confirms (RabbitMQ's extension to AMQP 0-9-1, after confirm.select) it
numbers the messages published on the channel 1, 2, 3, ... and answers
each with basic.ack (taken) or basic.nack (not taken), `multiple` covering
every number up to its own; with transactions (tx.select, the only way in
AMQP 0-8) tx.commit-ok says it has taken every message published since the
last commit. A message published with mandatory set that no queue takes
comes back as basic.return first. An Outbox counts; the program makes the
AMQP calls (producer.py shows both ways):

    outbox.watch(True, chan)  # on each new connection; with transactions, False and two channels
    while (content := (yield outbox.next_message())) is not None:
        chan.basic_publish(exchange=..., routing_key=..., mandatory=True, content=content)
        # with transactions: once outbox.full() or outbox.idle(), wait for the
        # commit before, commit this channel's batch and publish on the other:
        #     commit = outbox.committing(chan.tx_commit())
    yield outbox.wait_for_all()
    sent = outbox.sent()  # raises Failed if a message was returned or refused

The window bounds what is on its way: at most `window` messages and
`window_bytes` of their bodies unconfirmed, or in one transaction, but
always one message, however big. The Outbox keeps each message until the
broker has taken it; on the next connection next_message() gives those
first, so nothing is lost (a message may arrive twice).
"""

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from txamqp.client import Closed

from amqp_support._errors import Failed, UnexpectedMethod

if TYPE_CHECKING:
    from txamqp.content import Content
    from txamqp.message import Message

    from amqp_support._client import AMQChannel, Reason

T = TypeVar("T")


class Outbox:
    """Messages on their way to the broker, until it has taken them."""

    # Every BREATHE messages wait_for_room lets the reactor turn, room or not:
    # publishing never waits for the network, so otherwise nothing would go
    # out (nor answers come in) until the window fills.
    BREATHE = 200

    def __init__(self, contents: Iterable["Content"], *, window: int, window_bytes: int,
                 ready: Callable[[], Deferred[Any] | None] | None = None) -> None:
        """contents: the messages (txamqp Contents), an iterable. ready: for
        contents that come in over time (stdin's lines), a function that
        next_message() calls before taking each one: None when the next (or
        the end) is at hand, else a Deferred that fires once it is."""
        self.contents = iter(contents)
        self.ready = ready or (lambda: None)
        self.pending: Iterator[Content]  # watch()'s messages(), being given out on its channel
        self.waiting_input: Deferred[None] | None = None  # the Deferred of a wait for contents to come
        self.confirms = False  # else transactions: as watch() says
        self.window = window
        self.window_bytes = window_bytes
        self.chan: AMQChannel  # set by watch()
        self.again: deque[Content] = deque()  # sent on a connection that was lost, not taken: first on the next
        self.unsettled: OrderedDict[int, Content] = OrderedDict()  # this channel's: delivery tag: content, oldest first
        self.unsettled_bytes = 0  # the size of their bodies
        self.tags = 0
        self.batch = self.batch_bytes = 0  # with tx: messages and bytes since the last commit
        self.in_commit = 0  # with tx: the messages of the commit under way (its outcome unknown if it fails)
        self.generation = 0  # one per watch(): a commit-ok from a lost channel counts for nothing
        self.taken = 0  # acked or committed
        self.refused = 0  # nacked
        self.returns: list[tuple[int, str, str, str]] = []  # (code, text, exchange, key) of each basic.return
        self.waiting: tuple[Deferred[None], int, int] | None = None  # (d, fire when fewer than these are unsettled)
        self.failure: Exception | None = None

    def watch(self, confirms: bool, chan: "AMQChannel", *more: "AMQChannel") -> None:
        """Count what the broker says of the messages published on chan (and,
        with transactions, on the channels that take turns with it) from now
        on: each is in confirm mode if confirms, else in tx mode, and nothing
        is published on it yet. What the previous channels left unsettled is
        sent first, whatever their mode."""
        self.confirms = confirms
        self.again = deque([*self.unsettled.values(), *self.again])
        self.unsettled.clear()
        self.unsettled_bytes = 0
        self.tags = self.batch = self.batch_bytes = self.in_commit = 0
        self.generation += 1
        self.failure = None
        self.chan = chan
        self.pending = self.messages()
        for each in (chan, *more):
            each.report_to(self)

    def next_message(self) -> "Content | Deferred[Content | None] | None":
        """The next message to publish on the watched channel (counted as on
        its way), or None after the last: at once when it can, else a
        Deferred of it that fires once the window has room, the reactor has
        turned (every BREATHE messages), and the message has come in."""
        wait = self.wait_for_room()  # once per message: it counts them to breathe
        if wait is None:
            return self.next_when_in()
        return wait.addCallback(lambda _: self.next_when_in())

    def next_when_in(self) -> "Content | Deferred[Content | None] | None":
        """The next message once it has come in (what a lost connection left
        unconfirmed is always in)."""
        if not self.again:
            wait = self.wait_for_input()
            if wait is not None:
                return wait.addCallback(lambda _: self.next_when_in())
        return next(self.pending, None)

    def idle(self) -> bool:
        """Whether the next message has not come in yet (with transactions:
        time to commit what has, rather than hold it while stdin is quiet)."""
        return not self.again and self.ready() is not None

    def wait_for_input(self) -> Deferred[None] | None:
        """None when contents has its next message (or its end) at hand; else
        a Deferred that fires once it has, or fails if the channel closes."""
        ready = self.ready()
        if ready is None:
            return None
        d = self.waiting_input = defer.Deferred(lambda d: setattr(self, "waiting_input", None))  # Ctrl-C cancels it

        def came(result: object) -> object:
            if self.waiting_input is d and not d.called:
                self.waiting_input = None
                d.callback(None)
            return result
        ready.addBoth(came)
        return d

    def messages(self) -> Iterator["Content"]:
        """The messages to publish on the watched channel, each counted as
        on its way once given out."""
        while True:
            if self.again:
                content = self.again.popleft()
            else:
                content = next(self.contents, None)
                if content is None:
                    return
            # The broker numbers every message published on the channel since
            # confirm.select, from 1: that number is its delivery tag.
            self.tags += 1
            self.unsettled[self.tags] = content
            size = len(content.body)
            self.unsettled_bytes += size
            self.batch += 1
            self.batch_bytes += size
            yield content

    def full(self) -> bool:
        """Whether the window is full: time to commit, or to wait for confirms."""
        if self.confirms:
            return not self.below(self.window, self.window_bytes)
        return not (self.batch < self.window and self.batch_bytes < self.window_bytes)

    def below(self, messages: int, size: int) -> bool:
        return len(self.unsettled) < messages and self.unsettled_bytes < size

    def wait_for_room(self) -> Deferred[None] | None:
        """A Deferred that fires once the window has room (confirms came);
        None when it has room now, and it is no time to breathe: in
        inlineCallbacks, `yield None` goes on at once, without the cost of
        a Deferred for every message."""
        room = not self.confirms or self.below(self.window, self.window_bytes)  # tx: the program commits when full()
        if self.tags % self.BREATHE and self.failure is None and room:
            return None
        wait = self.wait_until_below(self.window, self.window_bytes) if self.confirms else defer.succeed(None)
        if self.tags % self.BREATHE:
            return wait
        return wait.addCallback(lambda _: task.deferLater(self.chan.client.clock, 0, lambda: None))

    def wait_for_all(self) -> Deferred[None]:
        """A Deferred that fires once the broker has answered every message."""
        return self.wait_until_below(1, 1)

    def committing(self, commit: Deferred[T]) -> Deferred[T]:
        """commit: the Deferred of tx.commit, just sent, for the messages
        published on its channel since its last commit (the batch). When it
        fires, they are taken; commit is returned, to wait on."""
        last, generation, count = self.tags, self.generation, self.batch
        self.batch = self.batch_bytes = 0
        self.in_commit += count

        def ok(result: T) -> T:
            if generation == self.generation:  # not a commit-ok from a lost channel
                self.in_commit -= count
                while self.unsettled and next(iter(self.unsettled)) <= last:
                    self.unsettled_bytes -= len(self.unsettled.popitem(last=False)[1].body)
                    self.taken += 1
                self.wake()
            return result
        return commit.addCallback(ok)

    def settle(self, tag: int, multiple: bool, accepted: bool) -> None:
        """basic.ack (accepted) or basic.nack of one message, or of every one up to tag."""
        settled = 0
        if self.confirms:
            if multiple:
                while self.unsettled and next(iter(self.unsettled)) <= tag:
                    self.unsettled_bytes -= len(self.unsettled.popitem(last=False)[1].body)
                    settled += 1
            elif tag in self.unsettled:
                self.unsettled_bytes -= len(self.unsettled.pop(tag).body)
                settled = 1
        if not settled:
            raise UnexpectedMethod("the broker confirmed delivery tag %d, which was not"
                                   " waiting for a confirm" % tag)
        if accepted:
            self.taken += settled
        else:
            self.refused += settled
        self.wake()

    def wake(self) -> None:
        """Fire the wait, if there is one and it is over."""
        if self.waiting is not None and self.below(*self.waiting[1:]):
            d, self.waiting = self.waiting[0], None
            d.callback(None)

    def returned(self, msg: "Message") -> None:
        """basic.return: a message no queue took (sent() then fails)."""
        self.returns.append((msg.reply_code, msg.reply_text, msg.exchange, msg.routing_key))

    def wait_until_below(self, messages: int, size: int) -> Deferred[None]:
        """A Deferred that fires once fewer than `messages` messages, and fewer
        than `size` bytes of bodies, are unconfirmed."""
        if self.failure is not None:
            return defer.fail(self.failure)
        if self.below(messages, size):
            return defer.succeed(None)
        assert self.waiting is None, "one wait at a time"
        d: Deferred[None] = defer.Deferred(lambda d: setattr(self, "waiting", None))  # Ctrl-C cancels it
        self.waiting = (d, messages, size)
        return d

    def channel_closed(self, reason: "Reason") -> None:
        """The watched channel closed: confirms will not come, whoever waits for them fails."""
        self.failure = Closed(reason)
        if self.waiting is not None:
            d, self.waiting = self.waiting[0], None
            d.errback(self.failure)
        if self.waiting_input is not None:
            d, self.waiting_input = self.waiting_input, None
            d.errback(self.failure)

    def counts(self) -> tuple[int, int]:
        """(sent, taken): the messages published so far (on this connection, or
        answered on an earlier one), and of them those the broker has taken."""
        return self.taken + self.refused + len(self.unsettled), self.taken

    def progress(self) -> str:
        """What the broker has taken so far, for a message that ends the run."""
        refused = " and refused %d" % self.refused if self.refused else ""
        # A commit that fails (RabbitMQ's "partial tx completion", a lost connection) may have stored some.
        partly = "; some of the %d in transactions being committed may have been stored" % self.in_commit
        return ("the broker had taken %d message(s)%s; %d more were sent but not confirmed%s"
                % (self.taken, refused, len(self.unsettled) + len(self.again), partly if self.in_commit else ""))

    def sent(self) -> int:
        """The number of messages the broker has answered, all of them taken;
        else Failed naming those returned or refused."""
        total = self.taken + self.refused
        problems = []
        if self.returns:
            code, text, exchange, key = self.returns[0]
            problems.append("%d of %d message(s) were returned unroutable: %s %s (no queue is"
                            " bound to exchange %r with routing key %r)"
                            % (len(self.returns), total, code, text, exchange, key))
        if self.refused:
            problems.append("%d of %d message(s) were refused by the broker (basic.nack; is a"
                            " queue full, with overflow reject-publish?)" % (self.refused, total))
        if problems:
            raise Failed("; ".join(problems))
        return total
