"""The producer's exit status says whether the broker took every message:
publisher confirms on 0-9-1 (acks, nacks), transactions on 0-8, mandatory
publishing on both (basic.return), and a broker that blocks publishers while
it is low on memory. End to end against the tests' own RabbitMQ node, except
the confirm bookkeeping at the bottom, which no broker here can be made to
exercise in every order."""

import re
import time

import pytest
from twisted.internet import defer
from txamqp.client import Closed
from txamqp.content import Content

import helpers
from amqp_support import _publish as publish
from amqp_support._errors import UnexpectedMethod
from amqp_support import Failed
from helpers import fails, run_script

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_unroutable_messages_are_reported(spec, broker, names):
    # The default exchange routes by queue name: a mistyped queue name
    # reaches no queue. Without mandatory the broker would drop it silently.
    args = ["--exchange", "", "--queue", names.queue, "--routing-key", names.queue + "-typo"]
    sent = run_script("producer.py", spec, "--count", "3", "lost?", *args, url=broker.url)
    fails(sent, 1, "3 of 3 message(s) were returned unroutable: 312 NO_ROUTE",
          "exchange '' with routing key %r" % (names.queue + "-typo"))
    assert helpers.queue_depth(broker.url, names.queue) == 0


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_routable_messages_exit_0(spec, broker, names):
    args = ["--exchange", "", "--queue", names.queue]
    sent = run_script("producer.py", spec, "--count", "3", "found", *args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert helpers.without_fallback_note(sent.stderr.decode()) == (
        "Sent 3 message(s) to exchange '' with routing key %r.\n" % names.queue)


@pytest.fixture
def full_queue(broker, names):
    """names.queue holds at most 2 messages and refuses more (an operator's
    policy: the scripts' own declarations stay equivalent)."""
    policy = "full-" + names.queue
    broker.ctl("set_policy", policy, "^%s$" % re.escape(names.queue),
               '{"max-length": 2, "overflow": "reject-publish"}', "--apply-to", "queues")
    yield names
    broker.ctl("clear_policy", policy)


@pytest.mark.rabbitmq4
def test_nacked_messages_are_reported(broker, full_queue):
    sent = run_script("producer.py", "amqp0-9-1.xml", "1", "2", "3", "4", "5", *full_queue.args,
                      url=broker.url)
    line = fails(sent, 1, "3 of 5 message(s) were refused by the broker (basic.nack")
    assert "not confirmed" not in line
    assert helpers.get_all(broker.url, full_queue.queue) == [b"1", b"2"]


def test_refused_messages_fail_the_transaction_on_0_8(broker, full_queue):
    # AMQP 0-8 has no nack: RabbitMQ refuses the commit instead.
    sent = run_script("producer.py", "amqp0-8.xml", "1", "2", "3", "4", "5", *full_queue.args,
                      url=broker.url)
    line = fails(sent, 1, "406 PRECONDITION_FAILED", "partial tx completion", "tx.commit")
    # The queue took two of the transaction's messages: the line must not say
    # the broker took none (a user who sends again makes duplicates).
    assert helpers.get_all(broker.url, full_queue.queue) == [b"1", b"2"]
    assert line.rstrip().endswith("(the broker had taken 0 message(s); 5 more were sent but not confirmed;"
                                  " some of the 5 in transactions being committed may have been stored)"), line


def wait_for_blocked_connection(broker, timeout=30):
    deadline = time.monotonic() + timeout
    while "blocked" not in broker.ctl("list_connections", "state").split():
        assert time.monotonic() < deadline, "no connection was blocked"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_producer_waits_while_the_broker_is_low_on_memory(spec, broker, names, spawn):
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    bodies = [b"%d" % i for i in range(3000)]
    # A watermark of 0: RabbitMQ's memory alarm goes off and it stops
    # reading from every connection that publishes.
    broker.ctl("set_vm_memory_high_watermark", "0")
    try:
        producer = spawn("producer.py", spec, "-", *names.args, url=broker.url,
                         input=b"".join(b + b"\n" for b in bodies))
        wait_for_blocked_connection(broker)
        if spec == "amqp0-9-1.xml":  # AMQP 0-8 cannot tell
            producer.wait_for_stderr("The broker blocked the connection (low on memory); waiting")
        # From here the broker reads nothing from the producer, so it cannot
        # have taken every message and the producer cannot rightly be done:
        # check so after that point (no sleep), then that its connection is
        # still there and blocked, and the producer still running, right
        # before the alarm is cleared.
        assert helpers.queue_depth(broker.url, names.queue) < len(bodies)
        wait_for_blocked_connection(broker)
        assert producer.returncode is None, producer.stderr_text
    finally:
        broker.ctl("set_vm_memory_high_watermark", "0.4")  # RabbitMQ's default
    assert producer.wait(timeout=60) == 0, producer.stderr_text
    if spec == "amqp0-9-1.xml":
        err = producer.stderr_text
        assert (err.index("The broker blocked the connection") < err.index("The broker unblocked the connection")
                < err.index("Sent ")), err
    assert helpers.get_all(broker.url, names.queue) == bodies


# --- the confirm bookkeeping, with a channel that only records -------------

class RecordingChannel:
    def __init__(self):
        self.published = []
        self.publisher = None

    def report_to(self, publisher):
        self.publisher = publisher

    def basic_publish(self, content):
        self.published.append(content)


def outbox_on(chan, contents, confirms=True, window=1000, window_bytes=1 << 20):
    outbox = publish.Outbox(contents, window=window, window_bytes=window_bytes)
    outbox.watch(confirms, chan)
    assert chan.publisher is outbox  # the delegate hands the broker's answers on chan to it
    return outbox


def publisher(window, contents, window_bytes=1 << 20):
    """An Outbox in confirm mode watching a recording channel, and a
    publish(): publish the next message, then wait for room, as producer.py does."""
    chan = RecordingChannel()
    outbox = outbox_on(chan, contents, window=window, window_bytes=window_bytes)
    messages = outbox.messages()

    def publish_next():
        chan.basic_publish(next(messages))
        wait = outbox.wait_for_room()
        return defer.succeed(None) if wait is None else wait  # None: room now (yield None goes on)
    return outbox, chan, publish_next


def bodies(*texts):
    return [Content(text) for text in texts]


def fired(d):
    """Whether d has its result (a Deferred whose callback waits on another has not)."""
    results = []
    d.addBoth(lambda result: results.append(result) or result)
    return bool(results)


def test_window_holds_the_publisher_until_confirms_come():
    outbox, chan, publish_next = publisher(3, bodies(b"0", b"1", b"2", b"3"))
    assert fired(publish_next()) and fired(publish_next())
    waiting = publish_next()  # tags 1, 2, 3 unconfirmed: the window is full
    assert not fired(waiting)
    outbox.settle(2, multiple=False, accepted=True)  # out of order: 1 and 3 left
    assert fired(waiting)
    waiting = publish_next()  # 1, 3, 4
    assert not fired(waiting)
    outbox.settle(3, multiple=True, accepted=True)  # 1 and 3 (2 is done): 4 left
    assert fired(waiting)
    done = outbox.wait_for_all()
    assert not fired(done)
    outbox.settle(4, multiple=False, accepted=True)
    assert fired(done) and outbox.sent() == 4
    assert [c.body for c in chan.published] == [b"0", b"1", b"2", b"3"]


def test_no_deferred_for_a_message_while_the_window_has_room():
    outbox, chan, _ = publisher(3, bodies(b"0", b"1", b"2", b"3"))
    messages = outbox.messages()
    chan.basic_publish(next(messages))
    assert outbox.wait_for_room() is None
    chan.basic_publish(next(messages))
    chan.basic_publish(next(messages))
    waiting = outbox.wait_for_room()  # 3 unconfirmed: full
    assert isinstance(waiting, defer.Deferred) and not fired(waiting)
    outbox.settle(3, multiple=True, accepted=True)
    assert fired(waiting)


def test_nacks_count_each_message_once():
    outbox, _, publish_next = publisher(10, bodies(*b"a b c d e f".split()))
    for _ in range(6):
        publish_next()
    outbox.settle(2, multiple=False, accepted=False)
    outbox.settle(3, multiple=True, accepted=False)  # 1 and 3, not 2 again
    outbox.settle(6, multiple=True, accepted=True)
    assert fired(outbox.wait_for_all())
    with pytest.raises(Failed, match=r"3 of 6 message\(s\) were refused by the broker"):
        outbox.sent()


def test_progress_tells_refused_messages_apart():
    outbox, _, publish_next = publisher(10, bodies(*b"a b c d".split()))
    for _ in range(4):
        publish_next()
    outbox.settle(1, multiple=False, accepted=False)
    outbox.settle(2, multiple=False, accepted=True)
    assert outbox.progress() == ("the broker had taken 1 message(s) and refused 1;"
                                 " 2 more were sent but not confirmed")


def test_bytes_unconfirmed_are_bounded_too():
    # Room for 1000 messages but 10 bytes: the third 4-byte message waits.
    outbox, _, publish_next = publisher(1000, bodies(b"1234", b"5678", b"9abc", b"de"), window_bytes=10)
    assert fired(publish_next()) and fired(publish_next())
    waiting = publish_next()
    assert not fired(waiting)
    outbox.settle(2, multiple=True, accepted=True)  # 4 bytes left
    assert fired(waiting)
    assert fired(publish_next())  # 6 bytes


def test_a_message_larger_than_the_byte_window_goes_alone():
    outbox, chan, publish_next = publisher(1000, bodies(b"x" * 100), window_bytes=10)
    waiting = publish_next()
    assert len(chan.published) == 1  # sent, however big
    assert not fired(waiting)  # and nothing more until it is confirmed
    outbox.settle(1, multiple=False, accepted=True)
    assert fired(waiting)


def test_a_transaction_is_full_at_window_bytes():
    # producer.py commits when the outbox is full: every 10 bytes here.
    outbox = outbox_on(RecordingChannel(), bodies(b"1234", b"5678", b"9abc", b"d"), confirms=False,
                       window_bytes=10)
    full = []
    for _ in outbox.messages():
        full.append(outbox.full())
        if outbox.full():
            outbox.committing(defer.succeed(None))
    assert full == [False, False, True, False]
    assert not fired(outbox.wait_for_all())
    outbox.committing(defer.succeed(None))
    assert fired(outbox.wait_for_all()) and outbox.sent() == 4


def test_a_batch_is_taken_when_its_commit_is_done():
    # producer.py with AMQP 0-8: each batch is committed, and the next
    # published once its commit-ok has come.
    outbox = outbox_on(RecordingChannel(), bodies(*b"1 2 3 4 5".split()), confirms=False, window=2)
    messages = outbox.messages()
    next(messages), next(messages)
    assert outbox.full()
    commit = outbox.committing(defer.Deferred())
    assert not outbox.full() and outbox.taken == 0
    commit.callback(None)
    assert outbox.taken == 2 and outbox.progress().endswith("0 more were sent but not confirmed")
    next(messages)
    done = outbox.wait_for_all()
    assert not fired(done)
    outbox.committing(defer.succeed(None))
    assert outbox.taken == 3 and fired(done)


def test_a_commit_from_a_lost_connection_counts_nothing():
    chan = RecordingChannel()
    outbox = outbox_on(chan, bodies(b"1", b"2", b"3"), confirms=False, window=2)
    messages = outbox.messages()
    next(messages), next(messages)
    late = outbox.committing(defer.Deferred())
    outbox.watch(False, RecordingChannel())  # the connection was lost: a new one
    late.callback(None)  # (cannot happen with txamqp, which fails it; counted as nothing if it did)
    assert outbox.taken == 0
    assert [c.body for c in outbox.messages()] == [b"1", b"2", b"3"]  # again, in order


def test_a_confirm_for_no_waiting_message_is_an_error():
    outbox, _, publish_next = publisher(10, bodies(b"0"))
    publish_next()
    outbox.settle(1, multiple=False, accepted=True)
    with pytest.raises(UnexpectedMethod, match="delivery tag 1"):
        outbox.settle(1, multiple=False, accepted=True)
    with pytest.raises(UnexpectedMethod, match="delivery tag 7"):
        outbox.settle(7, multiple=True, accepted=True)


def test_a_confirm_in_a_transaction_is_an_error():
    outbox = outbox_on(RecordingChannel(), bodies(b"0"), confirms=False)
    list(outbox.messages())
    with pytest.raises(UnexpectedMethod, match="delivery tag 1"):
        outbox.settle(1, multiple=False, accepted=True)


def test_closed_channel_fails_who_waits_for_confirms():
    outbox, _, publish_next = publisher(1, bodies(b"0"))
    waiting = publish_next()
    outbox.channel_closed("the reason")
    assert isinstance(waiting.result.value, Closed) and waiting.result.value.args == ("the reason",)
    waiting.addErrback(lambda _: None)
    later = outbox.wait_for_all()
    assert isinstance(later.result.value, Closed)
    later.addErrback(lambda _: None)


def test_cancelled_wait_is_forgotten():
    # Ctrl-C cancels what the producer waits for; a confirm that comes
    # afterwards must not fire the cancelled Deferred again.
    outbox, _, publish_next = publisher(1, bodies(b"0"))
    waiting = publish_next()
    waiting.cancel()
    waiting.addErrback(lambda _: None)
    outbox.settle(1, multiple=False, accepted=True)
    assert fired(outbox.wait_for_all()) and outbox.sent() == 1


def test_what_a_lost_channel_left_unconfirmed_goes_first_on_the_next():
    outbox, _, publish_next = publisher(10, bodies(*b"0 1 2 3 4".split()))
    for _ in range(3):
        publish_next()
    outbox.settle(1, multiple=False, accepted=True)  # 2 and 3 unconfirmed
    outbox.channel_closed("lost")
    assert outbox.progress() == "the broker had taken 1 message(s); 2 more were sent but not confirmed"
    second = RecordingChannel()
    outbox.watch(True, second)
    messages = outbox.messages()
    second.basic_publish(next(messages))  # "1" again: tags start over on a new channel
    outbox.channel_closed("lost again")
    outbox.watch(True, RecordingChannel())
    again = [c.body for c in outbox.messages()]
    assert [c.body for c in second.published] == [b"1"] and again == [b"1", b"2", b"3", b"4"]
    outbox.settle(4, multiple=True, accepted=True)
    assert fired(outbox.wait_for_all()) and outbox.sent() == 5


def test_unsettled_messages_go_on_across_a_switch_of_mode():
    # Failover between RabbitMQ 3 (amqp0-8.xml: transactions) and RabbitMQ 4
    # (amqp0-9-1.xml: confirms): each new channel may be in the other mode.
    outbox = outbox_on(RecordingChannel(), bodies(*b"0 1 2 3 4".split()), confirms=False)
    messages = outbox.messages()
    next(messages), next(messages)
    outbox.committing(defer.succeed(None))  # "0" and "1" taken
    next(messages)  # "2" in a transaction that never commits
    outbox.channel_closed("lost")
    outbox.watch(True, RecordingChannel())
    messages = outbox.messages()
    assert [next(messages).body for _ in range(2)] == [b"2", b"3"]
    outbox.settle(1, multiple=False, accepted=True)  # "2" taken, "3" not confirmed
    outbox.channel_closed("lost")
    outbox.watch(False, RecordingChannel())
    assert [c.body for c in outbox.messages()] == [b"3", b"4"]
    outbox.committing(defer.succeed(None))
    assert fired(outbox.wait_for_all()) and outbox.sent() == 5
    with pytest.raises(UnexpectedMethod):  # no confirms in a transaction
        outbox.settle(1, multiple=False, accepted=True)
