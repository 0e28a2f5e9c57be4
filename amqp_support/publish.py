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
    # on each new connection, once the channel is in confirm (or tx) mode:
    outbox.watch(chan, confirms=True)
    for content in outbox.messages():  # first what a lost connection left unconfirmed
        chan.basic_publish(exchange=..., routing_key=..., mandatory=True, content=content)
        yield outbox.wait_for_room()  # (with tx: if outbox.full(), commit first)
    yield outbox.wait_for_all()  # (with tx: yield chan.tx_commit(); outbox.committed())
    sent = outbox.sent()  # raises Failed if a message was returned or refused

The window bounds what is on its way (unconfirmed, or in one transaction):
at most `window` messages and `window_bytes` of their bodies, but always
one message, however big: a run of large messages holds a few MiB, not
`window` of them.

The Outbox keeps each message until the broker has taken it; on the next
connection messages() gives those first, so nothing is lost (a message may
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

    def __init__(self, contents, confirms=None, *, window, window_bytes):
        self.contents = iter(contents)
        self.confirms = confirms  # else transactions
        self.window = window
        self.window_bytes = window_bytes
        self.chan = None
        self.again = deque()  # sent on a connection that was lost, not taken: first on the next
        self.unsettled = OrderedDict()  # on this channel: delivery tag: content, oldest first
        self.unsettled_bytes = 0  # the size of their bodies
        self.tags = 0
        self.taken = 0  # acked or committed
        self.refused = 0  # nacked
        self.returns = []  # (code, text, exchange, key) of each basic.return
        self.waiting = None  # (Deferred, fire when fewer than this many are unsettled)
        self.failure = None

    def watch(self, chan, confirms=None):
        """Count what the broker says of the messages published on chan from
        now on (the channel is in confirm mode if confirms, else tx mode
        (None: as the last one), and nothing is published on it yet). What
        the previous channel left unsettled is sent first, whatever its mode."""
        if confirms is not None:
            self.confirms = confirms
        self.again = deque([*self.unsettled.values(), *self.again])
        self.unsettled.clear()
        self.unsettled_bytes = 0
        self.tags = 0
        self.failure = None
        self.chan = chan
        chan.publisher = self

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
            self.unsettled_bytes += len(content.body)
            yield content

    def full(self):
        """Whether the window is full: time to commit, or to wait for confirms."""
        return not self.below(self.window, self.window_bytes)

    def below(self, messages, size):
        return len(self.unsettled) < messages and self.unsettled_bytes < size

    def wait_for_room(self):
        """A Deferred that fires once the window has room (confirms came)."""
        wait = self.wait_until_below(self.window, self.window_bytes)
        if self.tags % self.BREATHE:
            return wait
        return wait.addCallback(lambda _: task.deferLater(self.chan.client.clock, 0, lambda: None))

    def wait_for_all(self):
        """A Deferred that fires once the broker has answered every message."""
        return self.wait_until_below(1, 1)

    def committed(self):
        """tx.commit-ok came: the broker has taken every message published since the last."""
        self.taken += len(self.unsettled)
        self.unsettled.clear()
        self.unsettled_bytes = 0

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
