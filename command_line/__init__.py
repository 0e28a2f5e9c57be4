"""The command line of producer.py and consumer.py: everything a person at
the terminal reads or types, apart from the AMQP conversation itself.

Importing it first checks the installed txamqp: amqp_support overrides
txamqp 0.8.2's internals, and with any other release a script says so in
one line instead of failing somewhere inside.
"""

import os
import sys

from amqp_support import UnsupportedTxamqp

try:
    import amqp_support._client  # noqa: F401 (it checks the txamqp release)
except UnsupportedTxamqp as e:
    raise SystemExit("%s: error: %s" % (os.path.basename(sys.argv[0]), e)) from None
