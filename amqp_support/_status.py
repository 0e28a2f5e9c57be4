"""Status lines for the person running a program ("reconnecting", "connected
to ...", "the broker blocked the connection"): amqp_support prints nothing,
it logs them as twisted.logger events in one namespace, and the program
decides where they go (command_line/running.py: stderr)."""

from twisted.logger import LogEvent, Logger

log = Logger(namespace=__name__)


def is_status(event: LogEvent) -> bool:
    """Whether a twisted.logger event is one of these status lines."""
    return event.get("log_namespace") == __name__
