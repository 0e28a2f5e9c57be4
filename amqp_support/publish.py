"""Publishing that ends knowing what the broker has taken, and that loses
nothing when the connection does.

The broker tells a publisher that it has taken a message in one of two ways:

- publisher confirms (RabbitMQ's extension to AMQP 0-9-1, after
  confirm.select): the broker numbers the messages published on the
  channel 1, 2, 3, ... (their delivery tags) and answers each with
  basic.ack (taken) or basic.nack (not taken); an answer with `multiple`
  set covers every message up to its number;
- transactions (after tx.select, the only way in AMQP 0-8): tx.commit-ok
  says the broker has taken every message published since the last commit.

Either way a message published with mandatory set that no queue takes comes
back as basic.return, before its ack or the commit-ok.

An Outbox does the counting; the program makes the AMQP calls:

    outbox = Outbox(contents, window=1000, window_bytes=4 << 20)
    # on each new connection, once the channel is in confirm mode:
    outbox.watch(chan, confirms=True)
    while (content := (yield outbox.next_message())) is not None:
        chan.basic_publish(exchange=..., routing_key=..., mandatory=True, content=content)
    yield outbox.wait_for_all()

next_message() gives first what a lost connection left unconfirmed, and
waits (returns a Deferred) while the window is full, or while the next
message has not come in yet when contents has a ready() (stdin's lines, say,
as they come: see Outbox).
    sent = outbox.sent()  # raises Failed if a message was returned or refused

With transactions, the program commits each batch (a transaction) once
outbox.full(), and hands the commit to outbox.committing(), which counts
the batch as taken when its commit-ok comes. While one channel's commit is
on its way, the next batch can be published on a second channel (nothing
may be sent on a channel between its tx.commit and commit-ok), and
committed once the first commit is done, so messages reach their queues
in the order they were published:

    outbox.watch(chan1, chan2, confirms=False)  # both in tx mode
    commit = None
    while (content := (yield outbox.next_message())) is not None:
        chan1.basic_publish(...)
        if outbox.full():
            yield commit  # the other channel's commit-ok
            commit = outbox.committing(chan1.tx_commit())
            chan1, chan2 = chan2, chan1
    yield commit
    yield outbox.committing(chan1.tx_commit())

The window bounds what is on its way: at most `window` messages and
`window_bytes` of their bodies unconfirmed, or in one transaction (two
with a commit on its way), but always one message, however big: a run of
large messages holds a few MiB, not `window` of them.

The Outbox keeps each message until the broker has taken it; on the next
connection next_message() gives those first, so nothing is lost (a message may
arrive twice). The delegate (amqp_support.client) hands basic.ack,
basic.nack and basic.return on a watched channel to the Outbox.
"""

from collections import OrderedDict, deque

from twisted.internet import defer, task
from txamqp.client import Closed

from amqp_support.errors import Failed, UnexpectedMethod


def has_confirms(spec):
    """Whether the spec file has publisher confirms (the confirm class)."""
    return "confirm" in spec.classes.byname


class Outbox:
    """Messages on their way to the broker, until it has taken them."""

    # Every so many messages, wait_for_room lets the reactor turn even when
    # there is room: it sends what was published so far and reads the
    # broker's answers, so the broker works on those while the next ones are
    # encoded (publishing never waits for the network, so without this
    # nothing would go out until the window fills).
    BREATHE = 200

    def __init__(self, contents, confirms=None, *, window, window_bytes, ready=None):
        """contents: the messages (txamqp Contents), an iterable. ready: for
        contents that come in over time (stdin's lines), a function that
        next_message() calls before taking each one: None when the next (or
        the end) is at hand, else a Deferred that fires once it is."""
        self.contents = iter(contents)
        self.ready = ready or (lambda: None)
        self.pending = None  # the messages() being given out on the watched channel
        self.waiting_input = None  # the Deferred of a wait for contents to come
        self.confirms = confirms  # else transactions
        self.window = window
        self.window_bytes = window_bytes
        self.chan = None
        self.again = deque()  # sent on a connection that was lost, not taken: first on the next
        self.unsettled = OrderedDict()  # on this channel: delivery tag: content, oldest first
        self.unsettled_bytes = 0  # the size of their bodies
        self.tags = 0
        self.batch = self.batch_bytes = 0  # with tx: messages and bytes since the last commit
        self.generation = 0  # one per watch(): a commit-ok from a lost channel counts for nothing
        self.taken = 0  # acked or committed
        self.refused = 0  # nacked
        self.returns = []  # (code, text, exchange, key) of each basic.return
        self.waiting = None  # (Deferred, fire when fewer than this many are unsettled)
        self.failure = None

    def watch(self, chan, *more, confirms=None):
        """Count what the broker says of the messages published on chan (and
        with transactions, on the channels after it) from now on: each is in
        confirm mode if confirms, else tx mode (None: as the last time), and
        nothing is published on it yet. What the previous channels left
        unsettled is sent first, whatever their mode."""
        if confirms is not None:
            self.confirms = confirms
        self.again = deque([*self.unsettled.values(), *self.again])
        self.unsettled.clear()
        self.unsettled_bytes = 0
        self.tags = self.batch = self.batch_bytes = 0
        self.generation += 1
        self.failure = None
        self.chan = chan
        self.pending = self.messages()
        for c in (chan, *more):
            c.publisher = self

    def next_message(self):
        """The next message to publish on the watched channel (counted as on
        its way), or None after the last: at once when it can, else a
        Deferred of it that fires once the window has room, the reactor has
        turned (every BREATHE messages), and the message has come in."""
        wait = self.wait_for_room()  # once per message: it counts them to breathe
        if wait is None:
            return self.next_when_in()
        return wait.addCallback(lambda _: self.next_when_in())

    def next_when_in(self):
        """The next message once it has come in (what a lost connection left
        unconfirmed is always in)."""
        if not self.again:
            wait = self.wait_for_input()
            if wait is not None:
                return wait.addCallback(lambda _: self.next_when_in())
        return next(self.pending, None)

    def idle(self):
        """Whether the next message has not come in yet (with transactions:
        time to commit what has, rather than hold it while stdin is quiet)."""
        return not self.again and self.ready() is not None

    def wait_for_input(self):
        """None when contents has its next message (or its end) at hand; else
        a Deferred that fires once it has, or fails if the channel closes."""
        ready = self.ready()
        if ready is None:
            return None
        # Ctrl-C cancels it.
        d = self.waiting_input = defer.Deferred(lambda d: setattr(self, "waiting_input", None))

        def came(result):
            if self.waiting_input is d and not d.called:
                self.waiting_input = None
                d.callback(None)
            return result
        ready.addBoth(came)
        return d

    def messages(self):
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

    def full(self):
        """Whether the window is full: time to commit, or to wait for confirms."""
        if self.confirms:
            return not self.below(self.window, self.window_bytes)
        return not (self.batch < self.window and self.batch_bytes < self.window_bytes)

    def below(self, messages, size):
        return len(self.unsettled) < messages and self.unsettled_bytes < size

    def wait_for_room(self):
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

    def wait_for_all(self):
        """A Deferred that fires once the broker has answered every message."""
        return self.wait_until_below(1, 1)

    def committing(self, commit):
        """commit: the Deferred of tx.commit, just sent, for the messages
        published on its channel since its last commit (the batch). When it
        fires, they are taken; commit is returned, to wait on."""
        last, generation = self.tags, self.generation
        self.batch = self.batch_bytes = 0

        def ok(result):
            if generation == self.generation:
                self.committed(last)
            return result
        return commit.addCallback(ok)

    def committed(self, last=None):
        """tx.commit-ok came: the broker has taken every message up to tag
        last (None: every one published so far)."""
        while self.unsettled and (last is None or next(iter(self.unsettled)) <= last):
            self.unsettled_bytes -= len(self.unsettled.popitem(last=False)[1].body)
            self.taken += 1
        if last is None:
            self.batch = self.batch_bytes = 0
        self.wake()

    def settle(self, tag, multiple, accepted):
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

    def wake(self):
        """Fire the wait, if there is one and it is over."""
        if self.waiting is not None and self.below(*self.waiting[1:]):
            d, self.waiting = self.waiting[0], None
            d.callback(None)

    def returned(self, msg):
        self.returns.append((msg.reply_code, msg.reply_text, msg.exchange, msg.routing_key))

    def wait_until_below(self, messages, size):
        """A Deferred that fires once fewer than `messages` messages, and fewer
        than `size` bytes of bodies, are unconfirmed."""
        if self.failure is not None:
            return defer.fail(self.failure)
        if self.below(messages, size):
            return defer.succeed(None)
        assert self.waiting is None, "one wait at a time"
        d = defer.Deferred(lambda d: setattr(self, "waiting", None))  # Ctrl-C cancels it
        self.waiting = (d, messages, size)
        return d

    def channel_closed(self, reason):
        # Confirms will not come any more: fail whoever waits for them.
        self.failure = Closed(reason)
        if self.waiting is not None:
            d, self.waiting = self.waiting[0], None
            d.errback(self.failure)
        if self.waiting_input is not None:
            d, self.waiting_input = self.waiting_input, None
            d.errback(self.failure)

    def counts(self):
        """(sent, taken): the messages published so far (on this connection, or
        answered on an earlier one), and of them those the broker has taken."""
        return self.taken + self.refused + len(self.unsettled), self.taken

    def progress(self):
        """What the broker has taken so far, for a message that ends the run."""
        refused = " and refused %d" % self.refused if self.refused else ""
        return ("the broker had taken %d message(s)%s; %d more were sent but not confirmed"
                % (self.taken, refused, len(self.unsettled) + len(self.again)))

    def sent(self):
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
