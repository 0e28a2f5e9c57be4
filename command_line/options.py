"""The scripts' options, AMQP_URL and --password-file: every failure here
is one line and exit status 2 (argparse's).

    args = options.parse_args(options.producer_parser(__doc__), argv)
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
from typing import TYPE_CHECKING, Any, NoReturn

import common
from amqp_support import BadTLSFile, BadURL, BrokerURL, ClientTLS, LongLong, Timestamp, UsageError
from command_line.text import printable, shorten

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TLS_OPTIONS = {"cafile": "--cafile", "certfile": "--certfile", "keyfile": "--keyfile"}


def shortstr(text: str) -> str:
    """An exchange, queue or routing key name."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # bytes in argv that are not UTF-8 arrive as lone surrogates
        shown = shorten(printable(os.fsencode(text)), limit=40)
        raise argparse.ArgumentTypeError("'%s' is not valid UTF-8: AMQP names are UTF-8 text" % shown) from None
    if size > 255:
        raise argparse.ArgumentTypeError("%.20r... is longer than AMQP's 255 bytes" % text)
    return text


def header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("%r is not KEY=VALUE" % text)
    return shortstr(key), value


def broker_url(text: str) -> BrokerURL:
    try:
        return BrokerURL(text)
    except BadURL as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    span = "from %d to %d" % (low, high) if high is not None else "%d or more" % low

    def parse(text: str) -> int:
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


def seconds(text: str) -> float:
    """A timeout in seconds (0 would retry forever)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= MAX_TIMEOUT:  # False for nan too
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most %d, not %s"
                                         % (MAX_TIMEOUT, shorten(repr(text))))
    return value


def milliseconds(text: str) -> float:
    return whole_number(1, MAX_TIMEOUT * 1000)(text) / 1000


# RabbitMQ's interval (its x-max-age's form): a whole number above 0 and one unit,
# Y(ears), M(onths), D(ays), h(ours), m(inutes) or s(econds).
INTERVAL = re.compile(r"[0-9]*[1-9][0-9]*[YMDhms]")


def stream_offset(text: str) -> str | LongLong | Timestamp:
    """Where a stream consumer starts: x-stream-offset's value with its field type.
    first, last, next, or an interval ("1h"): a string; an offset: a long-long;
    an ISO 8601 time (naive: local time): a timestamp, in whole seconds."""
    if text in ("first", "last", "next") or INTERVAL.fullmatch(text):
        return text
    if text.isdigit() and text.isascii():
        if int(text) < 2**63:
            return LongLong(int(text))
    else:
        try:
            seconds = datetime.datetime.fromisoformat(text).timestamp()  # naive: local time
        except (ValueError, OverflowError, OSError):
            seconds = -1
        if seconds >= 0:
            return Timestamp(math.floor(seconds))
    raise argparse.ArgumentTypeError(
        "must be first, last, next, an offset (a whole number), an ISO 8601 time such as"
        " 2024-05-01T12:00:00+02:00, or an interval such as 1h (Y, M, D, h, m or s), not %s"
        % shorten(repr(text)))


# RabbitMQ's URI query parameters: those honoured (option, unit, parse, default), and the others' why not.
URL_PARAMETERS: dict[str, tuple[str, str, Callable[[str], float], float]] = {
    "heartbeat": ("heartbeat", "seconds", short, 60),
    "connection_timeout": ("timeout", "milliseconds", milliseconds, 10.0)}
URL_REFUSED = {"cacertfile": "use --cafile", "certfile": "use --certfile", "keyfile": "use --keyfile",
               "verify": "amqps:// always verifies the broker's certificate and host name",
               "server_name_indication": "the URL's host name is sent and verified",
               "fail_if_no_peer_cert": "it is a broker's setting", "channel_max": "the scripts use one channel",
               "frame_max": "the broker's frame_max is used", "auth_mechanism": "the scripts log in with PLAIN"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, with one-line errors and checks across options (functions of args: an error, or None)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.checks: list[Callable[[argparse.Namespace], str | None]] = []

    def error(self, message: str) -> NoReturn:
        # One short line, not argparse's usage block: the usage is in --help.
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, shorten(message)))

    # ignore[override]: argparse's other overloads, with a namespace of another class, are not needed.
    def parse_intermixed_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                              namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_intermixed_args(args, namespace)
        # argparse would list every argument from the first it did not know.
        if extras and extras[0].startswith("-"):
            takes_messages = any(a.nargs == "*" for a in self._get_positional_actions())
            hint = ' (a MESSAGE that starts with "-" goes after "--")' if takes_messages else ""
            self.error("unrecognized option %r%s" % (extras[0], hint))
        if extras:
            self.error("unexpected argument %r" % extras[0])
        return parsed


class HelpFormatter(argparse.HelpFormatter):
    """--help shows an option's default, but not a flag's, nor an empty one, nor twice."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if (action.nargs == 0 or action.default in (None, []) or action.default is argparse.SUPPRESS
                or "(default:" in (action.help or "")):
            return action.help
        return "%s (default: %%(default)s)" % action.help


def make_parser(doc: str) -> ArgumentParser:
    """The options both scripts take."""
    parser = ArgumentParser(description=doc.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="AMQP spec file: amqp0-8.xml or amqp0-9-1.xml")
    parser.add_argument("--url", type=broker_url, action="append", default=argparse.SUPPRESS,
                        help="broker URL, amqp://user:password@host:port/vhost or amqps://...;"
                             " give it once per node of a cluster: the first that answers is used,"
                             " the next on loss, in turn (default: $AMQP_URL, several separated by"
                             " spaces, else %s)" % common.DEFAULT_URL.replace("%", "%%"))
    parser.add_argument("--exchange", type=shortstr, default=common.EXCHANGE_NAME,
                        help='exchange name; "" is the broker\'s default exchange')
    parser.add_argument("--exchange-type", default="direct",
                        choices=["direct", "fanout", "topic", "headers"], help="exchange type")
    parser.add_argument("--queue", type=shortstr, default=common.QUEUE_NAME, help="queue name")
    parser.add_argument("--routing-key", type=shortstr,
                        help="routing key (default: %s with the queue %s, else the queue name,"
                             " which --exchange \"\" always uses)" % (common.ROUTING_KEY, common.QUEUE_NAME))
    parser.add_argument("--queue-type", default="classic", choices=["classic", "quorum", "stream"],
                        help="quorum: replicated, for clusters (RabbitMQ 3.8 and later); stream: an"
                             " append-only log that consumers read from any point (RabbitMQ 3.9 and later)")
    parser.add_argument("--timeout", type=seconds,
                        help="seconds to wait for the broker to answer when connecting, above 0, at most"
                             " %d (default: 10.0, or the URL's ?connection_timeout= in milliseconds)" % MAX_TIMEOUT)
    # AMQP carries the heartbeat in a short (connection.tune-ok): 0 to 65535.
    parser.add_argument("--heartbeat", type=short,
                        help="seconds between heartbeats, 0 to 65535; a broker silent for three is"
                             " taken as gone; 0: off (default: 60, or the URL's ?heartbeat=)")
    parser.add_argument("--password-file", metavar="PATH",
                        help="read the password from the first line of this file instead of the URL"
                             " (a password on the command line shows in ps)")
    parser.add_argument("--cafile", help="CA certificates (PEM) for amqps:// (default: the system's)")
    parser.add_argument("--certfile", help="client certificate (PEM) for a broker that asks for one")
    parser.add_argument("--keyfile", help="the client certificate's private key (default: in --certfile)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log AMQP details and tracebacks")
    return parser


def producer_parser(doc: str) -> ArgumentParser:
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


def consumer_parser(doc: str) -> ArgumentParser:
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
    parser.add_argument("--offset", type=stream_offset,
                        help="with --queue-type stream: where to start reading, first, last, next, an"
                             " offset, an ISO 8601 time (local time without a zone) or an interval back"
                             " from now such as 30m or 2D (default: next)")
    parser.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                        help="exit when the connection is lost instead of reconnecting")
    parser.checks += [check_header_binding, check_stream]
    return parser


def check_stream(args: argparse.Namespace) -> str | None:
    """--offset and --prefetch against --queue-type; sets --offset's default, next, for a stream."""
    if args.queue_type != "stream":
        return None if args.offset is None else "--offset is for --queue-type stream"
    if args.prefetch == 0:
        return "a stream needs a prefetch: --prefetch 1 or more with --queue-type stream"
    if args.offset is None:
        args.offset = "next"
    return None


def check_header_binding(args: argparse.Namespace) -> str | None:
    if args.headers and args.exchange_type != "headers":
        return "--header binds only with --exchange-type headers"
    if args.exchange_type == "headers" and not args.headers:
        return ("--exchange-type headers needs a --header KEY=VALUE to bind with"
                " (without one, every message matches)")
    return None


def parse_args(parser: ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_intermixed_args(argv)  # options may come between messages
    if "url" not in args:  # no --url given
        args.url = brokers_from_environment(parser)
    if args.password_file:
        password = read_password(parser, args.password_file)
        for broker in args.url:  # one user for the whole cluster
            broker.password = password
    from_url_query(parser, args)
    if not args.queue:
        parser.error("--queue must not be empty")
    if args.routing_key is None:
        # The default exchange routes by queue name; a queue of one's own gets its own key.
        original = args.exchange and args.queue == common.QUEUE_NAME
        args.routing_key = common.ROUTING_KEY if original else args.queue
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if (args.cafile or args.certfile or args.keyfile) and not all(b.tls for b in args.url):
        # Whoever gave them meant TLS: don't send the password in the clear.
        parser.error("--cafile, --certfile and --keyfile are for amqps:// URLs, not amqp://")
    for check in parser.checks:
        if (problem := check(args)) is not None:
            parser.error(problem)
    return args


def from_url_query(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """--heartbeat and --timeout, where not given, from the URLs' query; any other parameter is refused."""
    found: dict[str, set[float]] = {name: set() for name in URL_PARAMETERS}
    for name, value in ((n, v) for broker in args.url for n, v in broker.query.items()):
        if name not in URL_PARAMETERS:
            parser.error("the URL's query parameter %r is not supported: %s" % (shorten(name), URL_REFUSED[name])
                         if name in URL_REFUSED else "%r is not a query parameter of amqp:// URLs"
                         " (heartbeat and connection_timeout are)" % shorten(name))
        try:
            found[name].add(URL_PARAMETERS[name][2](value))
        except argparse.ArgumentTypeError as e:
            parser.error("the URL's %s (%s) %s" % (name, URL_PARAMETERS[name][1], e))
    for name, (dest, _, _, default) in URL_PARAMETERS.items():
        if len(found[name]) > 1:
            parser.error("the URLs give different %s values" % name)
        if getattr(args, dest) is None:
            setattr(args, dest, found[name].pop() if found[name] else default)


def brokers_from_environment(parser: ArgumentParser) -> list[BrokerURL]:
    urls = os.environ.get("AMQP_URL", common.DEFAULT_URL).split()
    if not urls:  # not localhost: whoever set it meant a broker
        parser.error("AMQP_URL is set but empty: give a URL, or unset it for %s" % common.DEFAULT_URL)
    try:
        return [BrokerURL(url) for url in urls]
    except BadURL as e:
        parser.error("AMQP_URL: %s" % e)


def read_password(parser: ArgumentParser, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        parser.error("cannot read --password-file %r: %s" % (path, getattr(e, "strerror", None) or e))
    if not password:
        parser.error("--password-file %r is empty" % path)
    return password


def tls(args: argparse.Namespace) -> ClientTLS:
    try:
        return ClientTLS(args.cafile, args.certfile, args.keyfile)
    except BadTLSFile as e:
        raise UsageError(e.worded(TLS_OPTIONS[e.parameter])) from e
