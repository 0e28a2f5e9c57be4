"""Publishing that ends knowing what the broker has taken.

The broker tells a publisher that it has taken a message in one of two ways:

- publisher confirms (RabbitMQ's extension to AMQP 0-9-1, confirm.select):
  the broker numbers the messages published on the channel 1, 2, 3, ...
  (their delivery tags) and answers each with basic.ack (taken) or
  basic.nack (not taken); an answer with `multiple` set covers every
  message up to its number. The publisher keeps sending while the answers
  come, with at most `window` messages unanswered;
- transactions (tx.select, the only way in AMQP 0-8): the broker answers
  tx.commit once it has taken every message published since the last
  commit. The publisher commits every `window` messages.

Either way the bodies of the messages on their way are bounded too, by
`window_bytes` (one message is always allowed, however big): a run of large
messages holds a few MiB, not `window` of them. The publisher keeps every
message until the broker has taken it, to send it again after a reconnect.

Either way a message published with mandatory set that no queue takes comes
back as basic.return, before its ack or the commit-ok.

    Publisher = Confirms if has_confirms(spec) else Transactions
    publisher = yield Publisher.start(chan, window=1000, window_bytes=4 << 20)
    yield publisher.publish(exchange=..., routing_key=..., mandatory=True, content=...)
    sent = yield publisher.finish()  # raises Failed if a message was not taken

After a lost connection, Publisher.start(new_chan, ..., previous=publisher)
first sends again every message the broker had not yet taken.

The delegate (amqp_support.client) hands basic.ack, basic.nack and
basic.return on the channel to its publisher.
"""

from collections import OrderedDict

from twisted.internet import defer, task
from txamqp.client import Closed

from amqp_support.client import UnexpectedMethod
from amqp_support.errors import Failed


def has_confirms(spec):
    """Whether the spec file has publisher confirms (the confirm class)."""
    return "confirm" in spec.classes.byname


def body_size(fields):
    """The bytes of a message's body (the fields of its basic.publish)."""
    content = fields.get("content")
    return 0 if content is None else len(content.body)


class Publisher:
    """What both ways share: publish, count what the broker returns, finish."""

    def __init__(self, chan, window, window_bytes, previous=None):
        self.chan = chan
        self.window = window
        self.window_bytes = window_bytes
        # What the broker said of the messages before a reconnect still counts.
        self.published = previous.published - len(previous.unsettled()) if previous else 0
        self.returns = previous.returns if previous else []  # (code, text, exchange, key) each
        self.nacked = previous.nacked if previous else 0
        chan.publisher = self

    @classmethod
    @defer.inlineCallbacks
    def start(cls, chan, window, window_bytes, previous=None):
        """Put the channel in the mode (confirm or tx) and return a publisher;
        after a reconnect, send again what the previous one had not settled."""
        yield cls.select(chan)
        publisher = cls(chan, window, window_bytes, previous)
        for fields in previous.unsettled() if previous else []:
            yield publisher.publish(**fields)
        return publisher

    # Every so many messages, let the reactor turn even while there is room:
    # it sends what was published so far and reads the broker's answers, so
    # the broker works on those while the next ones are encoded (publishing
    # never waits for the network, so without this nothing would go out
    # until the window fills).
    BREATHE = 200

    def publish(self, **fields):
        """basic.publish; the Deferred fires once more may be published."""
        self.published += 1
        d = self.chan.basic_publish(**fields)
        return d.addCallback(self._after_publish)

    def _after_publish(self, _):
        wait = self.room()
        if self.published % self.BREATHE:
            return wait
        turn = lambda _=None: task.deferLater(self.chan.client.clock, 0, lambda: None)  # noqa: E731
        return turn() if wait is None else wait.addCallback(turn)

    def returned(self, msg):
        self.returns.append((msg.reply_code, msg.reply_text, msg.exchange, msg.routing_key))

    def channel_closed(self, reason):
        pass

    def progress(self):
        """What the broker has taken so far, for a message that ends the run."""
        unsettled = len(self.unsettled())
        refused = " and refused %d" % self.nacked if self.nacked else ""
        return ("the broker had taken %d message(s)%s; %d more were sent but not confirmed"
                % (self.published - unsettled - self.nacked, refused, unsettled))

    def check(self):
        """The number of messages published, or Failed naming those not taken."""
        problems = []
        if self.returns:
            code, text, exchange, key = self.returns[0]
            problems.append("%d of %d message(s) were returned unroutable: %s %s (no queue is"
                            " bound to exchange %r with routing key %r)"
                            % (len(self.returns), self.published, code, text, exchange, key))
        if self.nacked:
            problems.append("%d of %d message(s) were refused by the broker (basic.nack; is a"
                            " queue full, with overflow reject-publish?)" % (self.nacked, self.published))
        if problems:
            raise Failed("; ".join(problems))
        return self.published


class Transactions(Publisher):
    """tx.select, and tx.commit every `window` messages (or `window_bytes`
    of bodies) and at the end."""

    @staticmethod
    def select(chan):
        return chan.tx_select()

    def __init__(self, chan, window, window_bytes, previous=None):
        self.transaction = []  # the messages published since the last commit
        self.transaction_bytes = 0  # the size of their bodies
        super().__init__(chan, window, window_bytes, previous)

    def publish(self, **fields):
        self.transaction.append(fields)
        self.transaction_bytes += body_size(fields)
        return super().publish(**fields)

    def unsettled(self):
        return self.transaction

    @defer.inlineCallbacks
    def commit(self):
        yield self.chan.tx_commit()
        self.transaction = []
        self.transaction_bytes = 0

    def room(self):
        # Wait for the commit of each full transaction: at most one
        # transaction of messages is on its way.
        if len(self.transaction) >= self.window or self.transaction_bytes >= self.window_bytes:
            return self.commit()
        return None

    @defer.inlineCallbacks
    def finish(self):
        yield self.commit()
        return self.check()


class Confirms(Publisher):
    """confirm.select, at most `window` messages and `window_bytes` of bodies
    unconfirmed (but always one message), all confirmed at the end."""

    @staticmethod
    def select(chan):
        return chan.confirm_select()

    def __init__(self, chan, window, window_bytes, previous=None):
        self.unconfirmed = OrderedDict()  # delivery tag: the message's fields, oldest first
        self.unconfirmed_bytes = 0  # the size of their bodies
        self.tags = 0
        self.waiting = None  # (Deferred, fire when below these (messages, bytes) unconfirmed)
        self.failure = None
        super().__init__(chan, window, window_bytes, previous)

    def publish(self, **fields):
        # The broker numbers every message published on the channel since
        # confirm.select, from 1: that number is its delivery tag.
        self.tags += 1
        self.unconfirmed[self.tags] = fields
        self.unconfirmed_bytes += body_size(fields)
        return super().publish(**fields)

    def unsettled(self):
        return list(self.unconfirmed.values())

    def room(self):
        return self.fewer_than(self.window, self.window_bytes)

    def finish(self):
        return self.fewer_than(1, 1).addCallback(lambda _: self.check())

    def settle(self, tag, multiple, accepted):
        """basic.ack (accepted) or basic.nack of one message, or of every one up to tag."""
        settled = 0
        if multiple:
            while self.unconfirmed and next(iter(self.unconfirmed)) <= tag:
                self.unconfirmed_bytes -= body_size(self.unconfirmed.popitem(last=False)[1])
                settled += 1
        elif tag in self.unconfirmed:
            self.unconfirmed_bytes -= body_size(self.unconfirmed.pop(tag))
            settled = 1
        if not settled:
            raise UnexpectedMethod("the broker confirmed delivery tag %d, which was not"
                                   " waiting for a confirm" % tag)
        if not accepted:
            self.nacked += settled
        if self.waiting is not None and self.below(*self.waiting[1:]):
            d, self.waiting = self.waiting[0], None
            d.callback(None)

    def below(self, messages, size):
        return len(self.unconfirmed) < messages and self.unconfirmed_bytes < size

    def fewer_than(self, messages, size):
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
