"""The command line that producer.py and consumer.py share, on top of the
amqp_support library: the options and their defaults, the spec file, the
AMQPService built from the options, and how a run ends (one line on stderr
and an exit status for every failure; Ctrl-C as a cancellation). Every word
a person at the command line reads about an option lives here.

amqp_support (see its __init__.py) does the rest: service.py runs a
script's conversation on each new connection, client.py and codec.py make
txamqp byte-exact, explain.py says any failure in one line, publish.py
counts what the broker has taken.
"""

import argparse
import functools
import gc
import os
import re
import signal
import sys
import threading
import traceback
from collections import deque

from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogBeginner, textFileLogObserver

from amqp_support.errors import BadTLSFile, BadURL, UnsupportedTxamqp, UsageError

try:
    from amqp_support import client  # noqa: F401 (first: it checks the txamqp release)
except UnsupportedTxamqp as e:
    raise SystemExit("%s: error: %s" % (os.path.basename(sys.argv[0]), e)) from None
from amqp_support.endpoint import ClientTLS
from amqp_support import spec as amqp_spec
from amqp_support.explain import explain
from amqp_support.service import AMQPService
from amqp_support.status import is_status
from amqp_support.url import BrokerURL

# The original example's names, kept as defaults.
EXCHANGE_NAME = "test_message_exchange"
QUEUE_NAME = "test_message_queue"
ROUTING_KEY = "test_routing_key"
CONSUMER_TAG = "test_consumer_tag"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"

NON_PERSISTENT = 1
PERSISTENT = 2  # delivery-mode 2: the broker writes the message to disk

# What explain() appends to the failures whose remedy is on the command line.
HINTS = {
    "untrusted-certificate": "give its CA with --cafile",
    "client-certificate": "give --certfile and --keyfile",
    "speaks-0-9-1": "use amqp0-9-1.xml",
    "speaks-0-8": "use amqp0-8.xml",
    "unexpected": "run with --verbose for the traceback",
}
TLS_OPTIONS = {"cafile": "--cafile", "certfile": "--certfile", "keyfile": "--keyfile"}


def shortstr(text):
    """An exchange, queue or routing key name: UTF-8 text of at most 255 bytes."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # bytes in argv that are not UTF-8 arrive as lone surrogates
        shown = shorten(printable(os.fsencode(text)), limit=40)
        raise argparse.ArgumentTypeError("'%s' is not valid UTF-8: AMQP names are UTF-8 text" % shown) from None
    if size > 255:
        raise argparse.ArgumentTypeError("%.20r... is longer than AMQP's 255 bytes" % text)
    return text


def header(text):
    """A --header KEY=VALUE: the header's name (at most 255 bytes) and its value, a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("%r is not KEY=VALUE" % text)
    return shortstr(key), value


def broker_url(text):
    try:
        return BrokerURL(text)
    except BadURL as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def whole_number(low, high=None):
    """An argparse type: a whole number from low to high (None: no upper bound)."""
    span = "from %d to %d" % (low, high) if high is not None else "%d or more" % low

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError("must be a whole number %s, not %s"
                                             % (span, shorten(repr(text))))
        return value
    return parse


# An AMQP short (16 bits): heartbeat seconds, prefetch-count.
short = whole_number(0, 65535)
count = whole_number(1)

MAX_TIMEOUT = 86400  # a day; far beyond it, the reactor's poll() overflows


def seconds(text):
    """A timeout in seconds: a finite number above 0 (0 would retry forever)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= MAX_TIMEOUT:  # False for nan too
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most %d, not %s"
                                         % (MAX_TIMEOUT, shorten(repr(text))))
    return value


def shorten(text, limit=300, word=60):
    """text made one short line for an error message: characters that are not
    printable shown as Python escapes, each word and the whole cut to a limit."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = re.sub(r"\S{%d,}" % (word + 1), lambda m: m.group()[:word - 3] + "...", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with one-line errors and checks across options
    (checks: functions of the parsed args that return an error, or None)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.checks = []

    def error(self, message):
        # One short line, not argparse's usage block: the usage is in --help.
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, shorten(message)))

    def parse_intermixed_args(self, args=None, namespace=None):
        args, extras = self.parse_known_intermixed_args(args, namespace)
        # argparse would list every argument from the first it did not know.
        if extras and extras[0].startswith("-"):
            takes_messages = any(a.nargs == "*" for a in self._get_positional_actions())
            hint = ' (a MESSAGE that starts with "-" goes after "--")' if takes_messages else ""
            self.error("unrecognized option %r%s" % (extras[0], hint))
        if extras:
            self.error("unexpected argument %r" % extras[0])
        return args


class HelpFormatter(argparse.HelpFormatter):
    """--help shows each option's default once: not for flags, not when there is
    none (or an empty list, as for a repeatable option), not when the help
    already says it."""

    def _get_help_string(self, action):
        if (action.nargs == 0 or action.default in (None, []) or action.default is argparse.SUPPRESS
                or "(default:" in (action.help or "")):
            return action.help
        return "%s (default: %%(default)s)" % action.help


def make_parser(doc):
    """The options both scripts take (producer_parser and consumer_parser add their own)."""
    parser = ArgumentParser(description=doc.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="AMQP spec file: amqp0-8.xml or amqp0-9-1.xml")
    parser.add_argument("--url", type=broker_url, action="append", default=argparse.SUPPRESS,
                        help="broker URL, amqp://user:password@host:port/vhost or amqps://...;"
                             " give it once per node of a cluster: the first that answers is used,"
                             " the next on loss, in turn (default: $AMQP_URL, several separated by"
                             " spaces, else %s)" % DEFAULT_URL.replace("%", "%%"))
    parser.add_argument("--exchange", type=shortstr, default=EXCHANGE_NAME,
                        help='exchange name; "" is the broker\'s default exchange')
    parser.add_argument("--exchange-type", default="direct",
                        choices=["direct", "fanout", "topic", "headers"], help="exchange type")
    parser.add_argument("--queue", type=shortstr, default=QUEUE_NAME, help="queue name")
    parser.add_argument("--routing-key", type=shortstr,
                        help="routing key (default: %s; the queue name with --exchange \"\")"
                             % ROUTING_KEY)
    parser.add_argument("--queue-type", default="classic", choices=["classic", "quorum"],
                        help="quorum: replicated, for clusters (RabbitMQ 3.8 and later)")
    parser.add_argument("--timeout", type=seconds, default=10.0,
                        help="seconds to wait for the broker to answer when connecting"
                             " (above 0, at most %d)" % MAX_TIMEOUT)
    # AMQP carries the heartbeat in a short (connection.tune-ok): 0 to 65535.
    parser.add_argument("--heartbeat", type=short, default=60,
                        help="seconds between heartbeats, 0 to 65535; a broker silent for three"
                             " is taken as gone (0: off)")
    parser.add_argument("--password-file", metavar="PATH",
                        help="read the password from the first line of this file instead of the URL"
                             " (a password on the command line shows in ps)")
    parser.add_argument("--cafile", help="CA certificates (PEM) for amqps:// (default: the system's)")
    parser.add_argument("--certfile", help="client certificate (PEM) for a broker that asks for one")
    parser.add_argument("--keyfile", help="the client certificate's private key (default: in --certfile)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log AMQP details and tracebacks")
    return parser


def producer_parser(doc):
    """producer.py's command line: make_parser's options and its own."""
    parser = make_parser(doc)
    parser.add_argument("messages", metavar="MESSAGE", nargs="*",
                        help='a message to send; "-" sends each line of stdin as a message')
    parser.add_argument("--count", type=count, default=1, help="send each message this many times")
    parser.add_argument("--header", metavar="KEY=VALUE", dest="headers", type=header, action="append",
                        default=[], help="set this header on every message (repeatable); the value is"
                        " sent as a string, so a consumer's --header must give it as the same string")
    parser.add_argument("--transient", action="store_true",
                        help="do not ask the broker to write the messages to disk")
    parser.add_argument("--retry", action="store_true",
                        help="when the connection fails, reconnect and send again what the broker"
                             " had not taken (a message may then arrive twice)")
    return parser


def consumer_parser(doc):
    """consumer.py's command line: make_parser's options and its own."""
    parser = make_parser(doc)
    parser.add_argument("--count", type=count,
                        help="exit after this many messages (default: run until stopped)")
    # basic.qos carries prefetch-count in a short: 0 to 65535, where 0 means no limit.
    parser.add_argument("--prefetch", type=short, default=100,
                        help="how many unacknowledged messages the broker may send ahead,"
                             " 0 to 65535 (0: no limit)")
    parser.add_argument("--header", metavar="KEY=VALUE", dest="headers", type=header, action="append",
                        default=[], help="with --exchange-type headers: bind for messages that have"
                        " this header (repeatable; the value is compared as a string)")
    parser.add_argument("--x-match", choices=["all", "any"], default="all",
                        help="with --exchange-type headers: a message needs all the --header pairs,"
                             " or any one")
    parser.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                        help="exit when the connection is lost instead of reconnecting")
    parser.checks.append(check_header_binding)
    return parser


def check_header_binding(args):
    if args.headers and args.exchange_type != "headers":
        return "--header binds only with --exchange-type headers"
    if args.exchange_type == "headers" and not args.headers:
        return ("--exchange-type headers needs a --header KEY=VALUE to bind with"
                " (without one, every message matches)")
    return None


def parse_args(parser, argv):
    args = parser.parse_intermixed_args(argv)  # options may come between messages
    if "url" not in args:  # no --url given
        args.url = brokers_from_environment(parser)
    if args.password_file:
        password = read_password(parser, args.password_file)
        for broker in args.url:  # one user for the whole cluster
            broker.password = password
    if not args.queue:
        parser.error("--queue must not be empty")
    if args.routing_key is None:
        # The default exchange routes by queue name.
        args.routing_key = ROUTING_KEY if args.exchange else args.queue
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if (args.cafile or args.certfile or args.keyfile) and not all(b.tls for b in args.url):
        # Whoever gave them meant TLS: don't send the password in the clear.
        parser.error("--cafile, --certfile and --keyfile are for amqps:// URLs, not amqp://")
    for check in parser.checks:
        if (problem := check(args)) is not None:
            parser.error(problem)
    return args


class MessageBodies:
    """producer.py's messages as bytes, exactly as given, each --count times:
    every MESSAGE, and for "-" every line of stdin, without its newline.

    A thread reads stdin (a read may wait as long as the writer likes, as
    with `tail -f log |`), so the reactor never waits in one; it reads at
    most READ_AHEAD bytes ahead. next() must be called only when ready() is
    None: ready() is a Deferred while the next body has not come in yet."""

    READ_AHEAD = 256 << 10  # short lines are some 50 bytes of memory each: 4 MiB of them held 17 MiB

    def __init__(self, reactor, args):
        self.messages = list(args.messages)
        self.count = args.count
        self.body, self.copies = None, 0  # the body being repeated, and how many more times
        self.reactor = reactor
        self.lines = deque()  # stdin's lines read, not yet given out
        self.buffered = 0  # their bytes, and those of the line still coming
        self.partial = []  # chunks of the line still coming
        self.ended = "-" not in self.messages
        self.waiting = None  # the Deferred ready() gave out
        self.more = threading.Event()  # the thread may read on
        self.more.set()
        if not self.ended:
            threading.Thread(target=self.read, args=(sys.stdin.buffer,), daemon=True).start()

    def __iter__(self):
        return self

    def __next__(self):
        if not self.copies:
            self.body = self.take()
            self.copies = self.count
        self.copies -= 1
        return self.body

    def take(self):
        while self.messages:
            if self.messages[0] != "-":
                return os.fsencode(self.messages.pop(0))  # the bytes the shell passed
            if self.lines:
                line = self.lines.popleft()
                self.buffered -= len(line)
                self.read_on()
                return line
            assert self.ended, "next() before ready()"
            self.messages.pop(0)
        raise StopIteration

    def ready(self):
        if self.copies or self.lines or self.ended or not self.messages or self.messages[0] != "-":
            return None
        if self.waiting is None:
            self.waiting = defer.Deferred()
        return self.waiting

    def read_on(self):
        """Let the thread read more: while less than READ_AHEAD is buffered,
        or while no whole line is (a line may be longer than READ_AHEAD)."""
        if not self.more.is_set() and (self.buffered < self.READ_AHEAD or not self.lines):
            self.more.set()  # (set() takes a lock: not for every line)

    def read(self, stream):
        """In the thread: stdin in chunks, each handed to the reactor."""
        while True:
            self.more.wait()
            chunk = stream.read1(1 << 16)
            self.more.clear()  # until received() (or take()) says there is room for more
            self.reactor.callFromThread(self.received, chunk)
            if not chunk:
                return

    def received(self, chunk):
        """In the reactor: the lines of a chunk (b"" at the end of stdin)."""
        if chunk:
            *complete, rest = chunk.split(b"\n")
            if complete:
                self.partial.append(complete[0])
                complete[0] = b"".join(self.partial)
                self.partial = []
                self.lines.extend(complete)
            if rest:
                self.partial.append(rest)
            self.buffered += len(chunk) - len(complete)
            self.read_on()
        else:
            if self.partial:  # a last line without a newline
                self.lines.append(b"".join(self.partial))
                self.partial = []
            self.ended = True
        if self.waiting is not None and (self.lines or self.ended):
            d, self.waiting = self.waiting, None
            d.callback(None)


def brokers_from_environment(parser):
    """The brokers in $AMQP_URL (URLs separated by spaces), else the default one."""
    try:
        return [BrokerURL(url) for url in os.environ.get("AMQP_URL", DEFAULT_URL).split()
                ] or [BrokerURL(DEFAULT_URL)]
    except BadURL as e:
        parser.error("AMQP_URL: %s" % e)


def read_password(parser, path):
    """The first line of path, without its line end: a password kept out of
    the command line and the environment."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        parser.error("cannot read --password-file %r: %s" % (path, getattr(e, "strerror", None) or e))
    if not password:
        parser.error("--password-file %r is empty" % path)
    return password


def load_spec(path):
    """The AMQP spec file, loaded into txamqp's spec objects (amqp_support.spec):
    txamqp builds its methods from it."""
    try:
        with open(path, "rb") as f:
            spec = amqp_spec.load(f.read(), path)
        spec.classes.byname["basic"].methods.byname["publish"]
        spec.constants.byname["frame-end"]
    except FileNotFoundError as e:
        raise UsageError("%r is not a spec file: there is no such file (the first argument is"
                         " the path of amqp0-8.xml or amqp0-9-1.xml)" % path) from e
    except OSError as e:
        raise UsageError("cannot read spec file %r: %s" % (path, e.strerror or e)) from e
    except Exception as e:
        raise UsageError("%r is not an AMQP spec file that txamqp can load (%s: %s)"
                         % (path, type(e).__name__, e)) from e
    return spec


def fallback_spec(path):
    """When path is the project's amqp0-8.xml, a function that loads the
    project's amqp0-9-1.xml (the spec to use with a broker that refuses AMQP
    0-8, as RabbitMQ 4.0 and later do), called only if a broker does; else None."""
    # The project's amqp0-8.xml is known by its bytes: those of the
    # amqp0-8.xml beside this file, wherever the copy is and whatever its name.
    # Its 0-9-1 counterpart keeps the same Python-facing names (design.md,
    # fact 4), so the scripts' calls work with either. Another 0-8 spec file
    # (an edited copy, an older example's) has no counterpart we know of: for
    # it, a refusal stays the one clear line it was.
    ours = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amqp0-8.xml")
    try:
        with open(path, "rb") as given, open(ours, "rb") as project:
            if given.read() != project.read():
                return None
    except OSError:
        return None
    counterpart = os.path.join(os.path.dirname(ours), "amqp0-9-1.xml")
    return functools.partial(load_spec, counterpart) if os.path.isfile(counterpart) else None


def service(reactor, spec, args, reconnect):
    """The AMQPService for the brokers and connection options on the command line."""
    try:
        tls = ClientTLS(args.cafile, args.certfile, args.keyfile)
    except BadTLSFile as e:
        raise UsageError(e.worded(TLS_OPTIONS[e.parameter])) from e
    return AMQPService(reactor, spec, args.url, timeout=args.timeout, heartbeat=args.heartbeat,
                       tls=tls, reconnect=reconnect, hints=hints(args.verbose),
                       fallback=fallback_spec(args.spec))


def queue_arguments(args):
    """queue.declare's arguments for --queue-type."""
    return {"x-queue-type": "quorum"} if args.queue_type == "quorum" else {}


def binding(args):
    """The routing key and arguments of the queue's binding, by exchange type."""
    if args.exchange_type == "fanout":
        return {"routing_key": ""}  # a fanout exchange ignores keys: one binding is enough
    if args.exchange_type == "headers":
        # A headers exchange ignores keys too: it compares the message's
        # headers with the binding's arguments, all of them or any one.
        return {"routing_key": "", "arguments": {"x-match": args.x_match, **dict(args.headers)}}
    return {"routing_key": args.routing_key}  # direct: that very key; topic: a pattern


def hints(verbose):
    # With --verbose the traceback is shown already.
    return {k: v for k, v in HINTS.items() if not (verbose and k == "unexpected")}


def script(parser):
    """Run main(reactor, args) with parsed arguments; every failure ends in
    one line on stderr and the exit status (2: usage or spec, 1: the rest).
    amqp_support's status lines go to stderr as they come. Ctrl-C and
    SIGTERM cancel main's Deferred: the script decides what a cancelled step
    means (the consumer stops consuming and closes)."""
    def decorate(main):
        @functools.wraps(main)
        def run(reactor, *argv):
            # What the imports made (some 40,000 objects of Twisted, txamqp
            # and ours) lives as long as the process: frozen, the garbage
            # collector no longer walks it in each full collection, nor in
            # the ones Python runs as it exits, which took a sixth of a
            # one-message run (bench/README.md, "One message").
            gc.freeze()
            args = parse_args(parser, argv)
            # Where main writes its status lines (and the producer its progress line).
            args.stderr = Stderr(sys.stderr, live=not args.verbose)
            observer = textFileLogObserver(sys.stderr) if args.verbose else args.stderr.status
            globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
            d = defer.maybeDeferred(main, reactor, args)
            interruption = Interruption(reactor, d)
            # After reactor.run() has installed its own handlers, to replace them.
            reactor.callWhenRunning(interruption.install)
            return d.addErrback(exit_with_one_line, parser.prog, args.verbose, interruption)
        return run
    return decorate


class Stderr:
    """stderr as the scripts write to it: whole lines, and when live (a
    terminal that can erase a line; not with --verbose, whose log would mix
    with it) one line redrawn in place below them, the progress line, which
    any other line erases first."""

    def __init__(self, stream, live):
        self.stream = stream
        self.live = live and stream.isatty() and os.environ.get("TERM") != "dumb"
        self.drawn = False

    def status(self, event):
        """A twisted.logger observer: amqp_support's status lines."""
        if is_status(event):
            self.line(formatEvent(event))

    def line(self, text):
        self.erase()
        print(text, file=self.stream, flush=True)

    def draw(self, text):
        """(Re)draw the progress line: at most as wide as the terminal, so it cannot wrap."""
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except OSError:
            width = 80
        self.stream.write("\r" + text[:width - 1] + "\x1b[K")  # \x1b[K: erase to the end of the line
        self.stream.flush()
        self.drawn = True

    def erase(self):
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


class Progress:
    """with Progress(reactor, stderr, outbox): a line on a live stderr that
    counts the messages sent and taken as they go, from one second into the
    run (a short run shows nothing), a few times a second; erased at the end
    of the block, however it ends."""

    INTERVAL = 0.25  # seconds between drawings
    DELAY = 1.0  # seconds before the first

    def __init__(self, reactor, stderr, outbox):
        self.clock = reactor
        self.stderr = stderr
        self.outbox = outbox
        self.loop = task.LoopingCall(self.draw)
        self.loop.clock = reactor
        self.started = None
        self.samples = deque()  # (time, taken) over the last second or so, for the rate

    def __enter__(self):
        if self.stderr.live:
            self.started = self.clock.seconds()
            self.samples.append((self.started, self.outbox.counts()[1]))
            self.loop.start(self.INTERVAL, now=False)
        return self

    def __exit__(self, *exc_info):
        if self.loop.running:
            self.loop.stop()
        self.stderr.erase()

    def draw(self):
        now = self.clock.seconds()
        elapsed = now - self.started
        if elapsed < self.DELAY:
            return
        sent, taken = self.outbox.counts()
        self.samples.append((now, taken))
        while now - self.samples[0][0] > 1.0 + self.INTERVAL / 2:
            self.samples.popleft()
        then, taken_then = self.samples[0]
        rate = (taken - taken_then) / (now - then) if now > then else 0
        self.stderr.draw("sent %d, %s %d, %d msg/s, %d:%02d"
                         % (sent, "confirmed" if self.outbox.confirms else "committed", taken,
                            rate, elapsed // 60, elapsed % 60))


class Interruption:
    """Ctrl-C or SIGTERM cancels main's Deferred; a second one ends the process."""

    def __init__(self, reactor, d):
        self.reactor = reactor
        self.d = d
        self.signal = None

    def install(self):
        signal.signal(signal.SIGINT, self.handler)
        signal.signal(signal.SIGTERM, self.handler)

    def handler(self, signum, frame):
        if self.d.called:
            return
        if self.signal is not None:
            os._exit(1)  # the second one: stop now, without closing
        self.signal = signal.Signals(signum).name
        self.reactor.callFromThread(self.d.cancel)


def exit_with_one_line(failure, prog, verbose, interruption):
    if failure.check(SystemExit):
        return failure
    if verbose:
        traceback.print_exception(failure.type, failure.value, failure.getTracebackObject())
    status = 2 if failure.check(UsageError) else 1
    if failure.check(defer.CancelledError) and interruption.signal:
        line = "interrupted by %s before the end" % interruption.signal
    else:
        line = explain(failure.value, hints=hints(verbose))
    print("%s: error: %s" % (prog, shorten(line, limit=1000, word=300)), file=sys.stderr, flush=True)
    raise SystemExit(status)


def printable(body):
    """A message body as one line of text that cannot drive a terminal nor
    hide anything: UTF-8 decoded, with every character that str.isprintable()
    rejects escaped, and the backslash too, so the line reads back to the
    exact bytes (the rule is in the README, "What each script does")."""
    # Bytes that are not UTF-8 become U+DC80..U+DCFF, written \xNN below.
    text = body.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:  # the common case, at C speed
        return text
    return text.translate(Escapes())


class Escapes(dict):
    """str.translate's table for one body: each character's escape (or the
    character itself), worked out the first time it occurs."""

    def __missing__(self, code):
        self[code] = escaped = escape(chr(code))
        return escaped


SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(char):
    """One character of a decoded body as printable writes it."""
    if char in SHORT_ESCAPES:
        return SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:  # an ASCII control: the same byte in UTF-8
        return "\\x%02x" % code
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return "\\x%02x" % (code - 0xDC00)
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code


def report_undecodable_properties(prog, msg):
    """One line on stderr for a message whose properties (its headers table,
    say) could not be decoded, so that one is not lost without a word. Its
    body was printed all the same, and it is acked like any other."""
    problem = getattr(msg.content, "property_error", None)
    if problem:
        print("%s: warning: message with delivery tag %d: cannot decode its properties (%s);"
              " printed and acked anyway" % (prog, msg.delivery_tag, problem), file=sys.stderr, flush=True)
