"""Checks amqp0-8.xml and amqp0-9-1.xml against the protocols' facts.

The expected values below are an independent table of AMQP 0-8 and 0-9-1 facts
(plus RabbitMQ's 0-9-1 extensions); they are not read from the XML files.
No broker is needed.
"""

import inspect
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from txamqp import spec as txspec
from txamqp.client import TwistedDelegate
from txamqp.connection import Body, Frame, Header, Method

from amqp_support import _client as our_client
from amqp_support._codec import FRAME_END, FRAME_HEADER
from amqp_support._codec import pack_frame
from frames import unpack_payload
from amqp_support import _spec as our_spec

ROOT = Path(__file__).resolve().parent.parent
FILES = {"0-8": ROOT / "amqp0-8.xml", "0-9-1": ROOT / "amqp0-9-1.xml"}
VERSIONS = sorted(FILES)

_cache = {}


def load(version):
    if version not in _cache:
        _cache[version] = txspec.load(str(FILES[version]))
    return _cache[version]


def method(version, name):
    klass, meth = name.split(".")
    return load(version).classes.byname[klass].methods.byname[meth]


def table(text):
    """'a=1 b=2' -> {'a': 1, 'b': 2}"""
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


def pairs(text):
    """'a:bit b:short' -> [('a', 'bit'), ('b', 'short')]"""
    return [tuple(item.split(":")) for item in text.split()]


# ------------------------------------------------------------------ class and method ids

CLASS_IDS = {
    "0-8": table("connection=10 channel=20 access=30 exchange=40 queue=50 basic=60 file=70 "
                 "stream=80 tx=90 dtx=100 tunnel=110 test=120"),
    "0-9-1": table("connection=10 channel=20 exchange=40 queue=50 basic=60 confirm=85 tx=90"),
}

TX = "select=10 select-ok=11 commit=20 commit-ok=21 rollback=30 rollback-ok=31"

METHOD_IDS = {
    "0-8": {
        "connection": "start=10 start-ok=11 secure=20 secure-ok=21 tune=30 tune-ok=31 "
                      "open=40 open-ok=41 redirect=50 close=60 close-ok=61",
        "channel": "open=10 open-ok=11 flow=20 flow-ok=21 alert=30 close=40 close-ok=41",
        "access": "request=10 request-ok=11",
        "exchange": "declare=10 declare-ok=11 delete=20 delete-ok=21",
        # unbind/unbind-ok: RabbitMQ's addition to 0-8
        "queue": "declare=10 declare-ok=11 bind=20 bind-ok=21 purge=30 purge-ok=31 "
                 "delete=40 delete-ok=41 unbind=50 unbind-ok=51",
        "basic": "qos=10 qos-ok=11 consume=20 consume-ok=21 cancel=30 cancel-ok=31 "
                 "publish=40 return=50 deliver=60 get=70 get-ok=71 get-empty=72 ack=80 "
                 "reject=90 recover=100",
        "file": "qos=10 qos-ok=11 consume=20 consume-ok=21 cancel=30 cancel-ok=31 open=40 "
                "open-ok=41 stage=50 publish=60 return=70 deliver=80 ack=90 reject=100",
        "stream": "qos=10 qos-ok=11 consume=20 consume-ok=21 cancel=30 cancel-ok=31 "
                  "publish=40 return=50 deliver=60",
        "tx": TX,
        "dtx": "select=10 select-ok=11 start=20 start-ok=21",
        "tunnel": "request=10",
        "test": "integer=10 integer-ok=11 string=20 string-ok=21 table=30 table-ok=31 "
                "content=40 content-ok=41",
    },
    "0-9-1": {
        "connection": "start=10 start-ok=11 secure=20 secure-ok=21 tune=30 tune-ok=31 "
                      "open=40 open-ok=41 close=50 close-ok=51 blocked=60 unblocked=61 "
                      "update-secret=70 update-secret-ok=71",
        "channel": "open=10 open-ok=11 flow=20 flow-ok=21 close=40 close-ok=41",
        "exchange": "declare=10 declare-ok=11 delete=20 delete-ok=21 bind=30 bind-ok=31 "
                    "unbind=40 unbind-ok=51",
        "queue": "declare=10 declare-ok=11 bind=20 bind-ok=21 purge=30 purge-ok=31 "
                 "delete=40 delete-ok=41 unbind=50 unbind-ok=51",
        "basic": "qos=10 qos-ok=11 consume=20 consume-ok=21 cancel=30 cancel-ok=31 "
                 "publish=40 return=50 deliver=60 get=70 get-ok=71 get-empty=72 ack=80 "
                 "reject=90 recover-async=100 recover=110 recover-ok=111 nack=120",
        "tx": TX,
        "confirm": "select=10 select-ok=11",
    },
}


@pytest.mark.parametrize("version", VERSIONS)
def test_header_attributes(version):
    root = ET.parse(FILES[version]).getroot()
    s = load(version)
    if version == "0-8":
        assert (root.get("major"), root.get("minor")) == ("8", "0")
        # txamqp's AMQClient.check_0_8 tests (minor, major) == (0, 8)
        assert (s.minor, s.major) == (0, 8)
    else:
        assert (root.get("major"), root.get("minor"), root.get("revision")) == ("0", "9", "1")
        assert (s.major, s.minor) == (0, 9)
    assert root.get("port") == "5672"


@pytest.mark.parametrize("version", VERSIONS)
def test_class_ids(version):
    assert {c.name: c.id for c in load(version).classes} == CLASS_IDS[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_method_ids(version):
    got = {c.name: {m.name: m.id for m in c.methods} for c in load(version).classes}
    want = {k: table(v) for k, v in METHOD_IDS[version].items()}
    assert got == want


@pytest.mark.parametrize("version", VERSIONS)
def test_every_class_has_a_handler(version):
    for c in ET.parse(FILES[version]).getroot().iter("class"):
        assert c.get("handler") in ("connection", "channel", "tunnel"), c.get("name")


# ------------------------------------------------------------------ fields

SAME_FIELDS = {
    "connection.start": "version-major:octet version-minor:octet server-properties:table "
                        "mechanisms:longstr locales:longstr",
    "connection.start-ok": "client-properties:table mechanism:shortstr response:longstr "
                           "locale:shortstr",
    "connection.secure": "challenge:longstr",
    "connection.secure-ok": "response:longstr",
    "connection.tune": "channel-max:short frame-max:long heartbeat:short",
    "connection.tune-ok": "channel-max:short frame-max:long heartbeat:short",
    "connection.open": "virtual-host:shortstr capabilities:shortstr insist:bit",
    "connection.open-ok": "known-hosts:shortstr",
    "connection.close": "reply-code:short reply-text:shortstr class-id:short method-id:short",
    "connection.close-ok": "",
    "channel.open": "out-of-band:shortstr",
    "channel.flow": "active:bit",
    "channel.flow-ok": "active:bit",
    "channel.close": "reply-code:short reply-text:shortstr class-id:short method-id:short",
    "channel.close-ok": "",
    "exchange.declare": "ticket:short exchange:shortstr type:shortstr passive:bit durable:bit "
                        "auto-delete:bit internal:bit nowait:bit arguments:table",
    "exchange.declare-ok": "",
    "exchange.delete": "ticket:short exchange:shortstr if-unused:bit nowait:bit",
    "queue.declare": "ticket:short queue:shortstr passive:bit durable:bit exclusive:bit "
                     "auto-delete:bit nowait:bit arguments:table",
    "queue.declare-ok": "queue:shortstr message-count:long consumer-count:long",
    "queue.bind": "ticket:short queue:shortstr exchange:shortstr routing-key:shortstr "
                  "nowait:bit arguments:table",
    "queue.bind-ok": "",
    "queue.unbind": "ticket:short queue:shortstr exchange:shortstr routing-key:shortstr "
                    "arguments:table",
    "queue.purge": "ticket:short queue:shortstr nowait:bit",
    "queue.purge-ok": "message-count:long",
    "queue.delete": "ticket:short queue:shortstr if-unused:bit if-empty:bit nowait:bit",
    "queue.delete-ok": "message-count:long",
    "basic.qos": "prefetch-size:long prefetch-count:short global:bit",
    "basic.qos-ok": "",
    "basic.consume-ok": "consumer-tag:shortstr",
    "basic.cancel": "consumer-tag:shortstr nowait:bit",
    "basic.cancel-ok": "consumer-tag:shortstr",
    "basic.publish": "ticket:short exchange:shortstr routing-key:shortstr mandatory:bit "
                     "immediate:bit",
    "basic.return": "reply-code:short reply-text:shortstr exchange:shortstr routing-key:shortstr",
    "basic.deliver": "consumer-tag:shortstr delivery-tag:longlong redelivered:bit "
                     "exchange:shortstr routing-key:shortstr",
    "basic.get": "ticket:short queue:shortstr no-ack:bit",
    "basic.get-ok": "delivery-tag:longlong redelivered:bit exchange:shortstr "
                    "routing-key:shortstr message-count:long",
    "basic.get-empty": "cluster-id:shortstr",
    "basic.ack": "delivery-tag:longlong multiple:bit",
    "basic.reject": "delivery-tag:longlong requeue:bit",
    "tx.select": "",
    "tx.select-ok": "",
    "tx.commit": "",
    "tx.commit-ok": "",
    "tx.rollback": "",
}

CONSUME_08 = ("ticket:short queue:shortstr consumer-tag:shortstr no-local:bit no-ack:bit "
              "exclusive:bit nowait:bit")

OWN_FIELDS = {
    "0-8": {
        "channel.open-ok": "",
        "basic.consume": CONSUME_08,
        "basic.recover": "requeue:bit",
        "connection.redirect": "host:shortstr known-hosts:shortstr",
        "access.request": "realm:shortstr exclusive:bit passive:bit active:bit write:bit read:bit",
        "access.request-ok": "ticket:short",
        "channel.alert": "reply-code:short reply-text:shortstr details:table",
        "stream.qos": "prefetch-size:long prefetch-count:short consume-rate:long global:bit",
        "file.open": "identifier:shortstr content-size:longlong",
        "file.deliver": "consumer-tag:shortstr delivery-tag:longlong redelivered:bit "
                        "exchange:shortstr routing-key:shortstr identifier:shortstr",
        "test.integer": "integer-1:octet integer-2:short integer-3:long integer-4:longlong "
                        "operation:octet",
        "tunnel.request": "meta-data:table",
    },
    "0-9-1": {
        "channel.open-ok": "channel-id:longstr",
        "basic.consume": CONSUME_08 + " arguments:table",
        "basic.recover": "requeue:bit",
        "basic.recover-async": "requeue:bit",
        "basic.recover-ok": "",
        "basic.nack": "delivery-tag:longlong multiple:bit requeue:bit",
        "confirm.select": "nowait:bit",
        "confirm.select-ok": "",
        "connection.blocked": "reason:shortstr",
        "connection.unblocked": "",
        "connection.update-secret": "new-secret:longstr reason:shortstr",
        "exchange.bind": "ticket:short destination:shortstr source:shortstr "
                         "routing-key:shortstr nowait:bit arguments:table",
        "exchange.unbind": "ticket:short destination:shortstr source:shortstr "
                           "routing-key:shortstr nowait:bit arguments:table",
    },
}


def field_cases():
    for version in VERSIONS:
        for name, fields in list(SAME_FIELDS.items()) + list(OWN_FIELDS[version].items()):
            yield pytest.param(version, name, fields, id="%s-%s" % (version, name))


@pytest.mark.parametrize("version,name,fields", list(field_cases()))
def test_fields(version, name, fields):
    m = method(version, name)
    assert [(f.name, f.type) for f in m.fields] == pairs(fields)


BASIC_PROPERTIES = pairs(
    "content-type:shortstr content-encoding:shortstr headers:table delivery-mode:octet "
    "priority:octet correlation-id:shortstr reply-to:shortstr expiration:shortstr "
    "message-id:shortstr timestamp:timestamp type:shortstr user-id:shortstr app-id:shortstr "
    "cluster-id:shortstr")


@pytest.mark.parametrize("version", VERSIONS)
def test_basic_properties(version):
    basic = load(version).classes.byname["basic"]
    assert [(f.name, f.type) for f in basic.fields] == BASIC_PROPERTIES


def test_other_content_properties_0_8():
    classes = load("0-8").classes.byname
    assert [(f.name, f.type) for f in classes["file"].fields] == pairs(
        "content-type:shortstr content-encoding:shortstr headers:table priority:octet "
        "reply-to:shortstr message-id:shortstr filename:shortstr timestamp:timestamp "
        "cluster-id:shortstr")
    assert [(f.name, f.type) for f in classes["stream"].fields] == pairs(
        "content-type:shortstr content-encoding:shortstr headers:table priority:octet "
        "timestamp:timestamp")
    assert [(f.name, f.type) for f in classes["tunnel"].fields] == pairs(
        "headers:table proxy-name:shortstr data-name:shortstr durable:octet broadcast:octet")


@pytest.mark.parametrize("version", VERSIONS)
def test_field_types_are_codec_types(version):
    known = {"bit", "octet", "short", "long", "longlong", "shortstr", "longstr",
             "timestamp", "table"}
    for c in load(version).classes:
        assert {f.type for f in c.fields} <= known, c.name
        for m in c.methods:
            assert {f.type for f in m.fields} <= known, (c.name, m.name)


# ------------------------------------------------------------------ constants

FRAMES = {
    "0-8": table("frame-method=1 frame-header=2 frame-body=3 frame-oob-method=4 "
                 "frame-oob-header=5 frame-oob-body=6 frame-trace=7 frame-heartbeat=8 "
                 "frame-min-size=4096 frame-end=206"),
    "0-9-1": table("frame-method=1 frame-header=2 frame-body=3 frame-heartbeat=8 "
                   "frame-min-size=4096 frame-end=206"),
}
REPLY_CODES = table(
    "reply-success=200 content-too-large=311 connection-forced=320 invalid-path=402 "
    "access-refused=403 not-found=404 resource-locked=405 precondition-failed=406 "
    "frame-error=501 syntax-error=502 command-invalid=503 channel-error=504 "
    "resource-error=506 not-allowed=530 not-implemented=540 internal-error=541")
OWN_REPLY_CODES = {
    "0-8": table("not-delivered=310"),
    "0-9-1": table("no-route=312 no-consumers=313 unexpected-frame=505"),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_constants(version):
    want = dict(FRAMES[version], **REPLY_CODES, **OWN_REPLY_CODES[version])
    assert {c.name: c.id for c in load(version).constants} == want


@pytest.mark.parametrize("version", VERSIONS)
def test_constant_values_unique(version):
    values = [c.get("value") for c in ET.parse(FILES[version]).getroot().iter("constant")]
    assert len(values) == len(set(values))


@pytest.mark.parametrize("version", VERSIONS)
def test_frame_constants_have_txamqp_names(version):
    consts = load(version).constants.bypyname
    kinds = [Frame.METHOD, Frame.HEADER, Frame.BODY, Frame.HEARTBEAT]
    if version == "0-8":
        kinds += [Frame.OOB_METHOD, Frame.OOB_HEADER, Frame.OOB_BODY, Frame.TRACE]
    for kind in kinds:
        assert kind in consts, kind
    assert consts["frame_end"].id == 206
    assert FRAME_END == 206  # what amqp_support._codec ends each frame with


# ------------------------------------------------------------------ names seen from Python

USED = ["connection.start", "connection.start-ok", "connection.tune", "connection.tune-ok",
        "connection.open", "connection.open-ok", "connection.close", "connection.close-ok",
        "channel.open", "channel.close", "channel.close-ok", "channel.flow", "channel.flow-ok",
        "exchange.declare", "exchange.delete", "queue.declare", "queue.declare-ok",
        "queue.bind", "queue.unbind", "queue.purge", "queue.delete", "basic.qos",
        "basic.consume", "basic.consume-ok", "basic.cancel", "basic.cancel-ok",
        "basic.publish", "basic.return", "basic.deliver", "basic.get", "basic.get-ok",
        "basic.get-empty", "basic.ack", "basic.reject", "basic.recover", "tx.select",
        "tx.commit", "tx.rollback"]
# fields 0-9-1 has and 0-8 has not
ADDED_IN_0_9_1 = {"basic.consume": ["arguments"], "channel.open-ok": ["channel_id"]}


def keywords(version, name):
    klass, meth = name.split(".")
    fn = getattr(load(version).klass, txspec.pythonize("%s_%s" % (klass, meth)))
    return [p for p in inspect.signature(fn).parameters if p != "self"]


@pytest.mark.parametrize("name", USED + list(ADDED_IN_0_9_1))
def test_same_python_keywords_in_both_files(name):
    old, new = keywords("0-8", name), keywords("0-9-1", name)
    extra = ADDED_IN_0_9_1.get(name, [])
    assert [k for k in new if k not in extra] == old


def test_same_python_property_names():
    names = [[txspec.pythonize(f.name) for f in load(v).classes.byname["basic"].fields]
             for v in VERSIONS]
    assert names[0] == names[1]
    assert "delivery_mode" in names[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_twisted_delegate_handlers_match_method_names(version):
    s = load(version)
    names = {"%s_%s" % (txspec.pythonize(c.name), txspec.pythonize(m.name))
             for c in s.classes for m in c.methods}
    handlers = {n for n in vars(TwistedDelegate) if not n.startswith("_") and n != "close"}
    assert handlers <= names


# What amqp_support._client's Delegate handles, and the fields it reads (basic.deliver:
# AMQClient.deliver, which puts a delivery into its consumer's queue without the delegate).
DELEGATE_READS = {
    "basic.ack": ["delivery-tag", "multiple"],
    "basic.nack": ["delivery-tag", "multiple"],
    "basic.return": ["reply-code", "reply-text", "exchange", "routing-key"],
    "basic.cancel": ["consumer-tag"],
    "basic.deliver": ["consumer-tag"],
    "connection.start": [],
    "connection.tune": ["channel-max", "frame-max"],
    "connection.blocked": ["reason"],
    "connection.unblocked": [],
}
# RabbitMQ's extensions the project uses: 0-9-1 has them, 0-8 has not.
EXTENSIONS = ["basic.nack", "confirm.select", "connection.blocked", "connection.unblocked"]


def has(version, name):
    klass, meth = name.split(".")
    classes = load(version).classes.byname
    return klass in classes and meth in classes[klass].methods.byname


def test_our_delegate_handles_methods_by_their_names():
    handlers = {n for n in vars(our_client.Delegate) if not n.startswith("_") and not n.isupper()}
    # txamqp's Delegate.dispatch looks handlers up by these names.
    expected = {"%s_%s" % tuple(map(txspec.pythonize, n.split("."))) for n in DELEGATE_READS if n != "basic.deliver"}
    assert handlers == expected


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(DELEGATE_READS))
def test_fields_our_delegate_reads(version, name):
    if name in EXTENSIONS and version == "0-8":
        assert not has(version, name)
        return
    assert [f.name for f in method(version, name).fields if f.name in DELEGATE_READS[name]] \
        == DELEGATE_READS[name]


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extensions_only_in_0_9_1(name):
    assert has("0-9-1", name) and not has("0-8", name)


def test_publisher_and_capabilities_follow_the_spec():
    assert [our_client.has_confirms(load(v)) for v in VERSIONS] == [False, True]
    for capability, name in our_client.EXTENSIONS.items():
        assert name in EXTENSIONS, capability
    assert keywords("0-9-1", "confirm.select") == ["nowait"]
    assert keywords("0-8", "tx.select") == keywords("0-9-1", "tx.select") == []


NOWAIT_METHODS = {
    "0-8": {"exchange.declare", "exchange.delete", "queue.declare", "queue.bind",
            "queue.purge", "queue.delete", "basic.consume", "basic.cancel", "file.consume",
            "file.cancel", "stream.consume", "stream.cancel"},
    "0-9-1": {"exchange.declare", "exchange.delete", "exchange.bind", "exchange.unbind",
              "queue.declare", "queue.bind", "queue.purge", "queue.delete", "basic.consume",
              "basic.cancel", "confirm.select"},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_no_wait_bit_is_named_nowait(version):
    found = set()
    for c in load(version).classes:
        for m in c.methods:
            for f in m.fields:
                if re.sub(r"[-_ ]", "", f.name.lower()) == "nowait":
                    assert f.name == "nowait", (c.name, m.name, f.name)
                    assert f.type == "bit"
                    found.add("%s.%s" % (c.name, m.name))
    assert found == NOWAIT_METHODS[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_names_are_hyphenated_lower_case(version):
    root = ET.parse(FILES[version]).getroot()
    for tag in ("constant", "domain", "class", "method", "field", "response"):
        for el in root.iter(tag):
            assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", el.get("name")), el.get("name")


# ------------------------------------------------------------------ responses, content

RESPONSES = {
    "0-8": {
        "connection.start": "start-ok", "connection.secure": "secure-ok",
        "connection.tune": "tune-ok", "connection.open": "open-ok redirect",
        "connection.close": "close-ok",
        "channel.open": "open-ok", "channel.flow": "flow-ok", "channel.close": "close-ok",
        "access.request": "request-ok",
        "exchange.declare": "declare-ok", "exchange.delete": "delete-ok",
        "queue.declare": "declare-ok", "queue.bind": "bind-ok", "queue.purge": "purge-ok",
        "queue.delete": "delete-ok", "queue.unbind": "unbind-ok",
        "basic.qos": "qos-ok", "basic.consume": "consume-ok", "basic.cancel": "cancel-ok",
        "basic.get": "get-ok get-empty",
        "file.qos": "qos-ok", "file.consume": "consume-ok", "file.cancel": "cancel-ok",
        "file.open": "open-ok", "file.open-ok": "stage",
        "stream.qos": "qos-ok", "stream.consume": "consume-ok", "stream.cancel": "cancel-ok",
        "tx.select": "select-ok", "tx.commit": "commit-ok", "tx.rollback": "rollback-ok",
        "dtx.select": "select-ok", "dtx.start": "start-ok",
        "test.integer": "integer-ok", "test.string": "string-ok", "test.table": "table-ok",
        "test.content": "content-ok",
    },
    "0-9-1": {
        "connection.start": "start-ok", "connection.secure": "secure-ok",
        "connection.tune": "tune-ok", "connection.open": "open-ok",
        "connection.close": "close-ok", "connection.update-secret": "update-secret-ok",
        "channel.open": "open-ok", "channel.flow": "flow-ok", "channel.close": "close-ok",
        "exchange.declare": "declare-ok", "exchange.delete": "delete-ok",
        "exchange.bind": "bind-ok", "exchange.unbind": "unbind-ok",
        "queue.declare": "declare-ok", "queue.bind": "bind-ok", "queue.purge": "purge-ok",
        "queue.delete": "delete-ok", "queue.unbind": "unbind-ok",
        "basic.qos": "qos-ok", "basic.consume": "consume-ok", "basic.cancel": "cancel-ok",
        "basic.get": "get-ok get-empty", "basic.recover": "recover-ok",
        "tx.select": "select-ok", "tx.commit": "commit-ok", "tx.rollback": "rollback-ok",
        "confirm.select": "select-ok",
    },
}

NEVER_RESPONSES = ["connection.start", "connection.tune", "connection.close", "channel.close",
                   "basic.deliver", "basic.ack", "basic.cancel", "basic.return",
                   "basic.publish", "basic.reject"]
NEVER_RESPONSES_0_9_1 = ["basic.nack", "connection.blocked", "connection.unblocked"]


@pytest.mark.parametrize("version", VERSIONS)
def test_responses(version):
    got = {"%s.%s" % (c.name, m.name): " ".join(r.name for r in m.responses)
           for c in load(version).classes for m in c.methods if m.responses}
    assert got == RESPONSES[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_response_flags(version):
    want = {"%s.%s" % (name.split(".")[0], r)
            for name, rs in RESPONSES[version].items() for r in rs.split()}
    got = {"%s.%s" % (c.name, m.name)
           for c in load(version).classes for m in c.methods if m.response}
    assert got == want
    never = NEVER_RESPONSES + (NEVER_RESPONSES_0_9_1 if version == "0-9-1" else [])
    for name in never:
        assert not method(version, name).response, name
    assert method(version, "basic.cancel-ok").response


@pytest.mark.parametrize("version", VERSIONS)
def test_synchronous_requests(version):
    for name in RESPONSES[version]:
        assert method(version, name).synchronous, name
    for name in ("basic.publish", "basic.deliver", "basic.ack", "basic.return"):
        assert not method(version, name).synchronous, name


CONTENT = {
    "0-8": {"basic.publish", "basic.return", "basic.deliver", "basic.get-ok", "file.stage",
            "file.return", "stream.publish", "stream.return", "stream.deliver",
            "tunnel.request", "test.content", "test.content-ok"},
    "0-9-1": {"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_content_methods(version):
    got = {"%s.%s" % (c.name, m.name)
           for c in load(version).classes for m in c.methods if m.content}
    assert got == CONTENT[version]


# ------------------------------------------------------------------ no published prose

@pytest.mark.parametrize("version", VERSIONS)
def test_no_prose(version):
    root = ET.parse(FILES[version]).getroot()
    for el in root.iter():
        for text in (el.text, el.tail):
            if text and text.strip():
                assert len(text.split()) <= 6, (el.tag, el.get("name"), text.strip()[:80])
    assert all(len((d.text or "").split()) <= 6 for d in root.iter("doc"))
    raw = FILES[version].read_text()
    for phrase in ("This method", "The server MUST", "The client MUST", "If set,"):
        assert phrase not in raw


# ------------------------------------------------------------------ wire round trip

# Through amqp_support._codec, which the scripts read and write frames with
# (not txamqp's own FrameReceiver, which they do not use).

def unpack_frame(s, data):
    """(channel, payload) from the bytes of one whole frame."""
    kind, channel, size = FRAME_HEADER.unpack_from(data)
    assert len(data) == FRAME_HEADER.size + size + 1 and data[-1] == FRAME_END
    return channel, unpack_payload(s, kind, data[FRAME_HEADER.size:-1])


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_publish_frames(version):
    s = load(version)
    publish = s.classes.byname["basic"].methods.byname["publish"]

    data = pack_frame(1, Method(publish, 0, "ex", "rk", True, False))
    # type 1, channel 1, size, class 60, method 40, ticket 0, "ex", "rk", bits, frame end
    assert data == (b"\x01\x00\x01\x00\x00\x00\x0d" + b"\x00\x3c\x00\x28" + b"\x00\x00"
                    + b"\x02ex" + b"\x02rk" + b"\x01" + b"\xce")
    channel, payload = unpack_frame(s, data)
    assert channel == 1
    assert payload.method is publish
    assert payload.args == (0, "ex", "rk", True, False)

    basic = s.classes.byname["basic"]
    header = Header(basic, 0, 5, **{"delivery-mode": 2, "content-type": "text/plain"})
    data = pack_frame(1, header)
    # property flags: content-type is bit 15, delivery-mode bit 12
    assert data[:1] == b"\x02" and data[-1:] == b"\xce"
    assert data[7:7 + 14] == b"\x00\x3c\x00\x00" + b"\x00" * 7 + b"\x05" + b"\x90\x00"
    _, payload = unpack_frame(s, data)
    assert payload.klass is basic
    assert payload.size == 5
    assert payload.properties == {"delivery-mode": 2, "content-type": "text/plain"}

    # A headers table takes the codec's other way (not the struct fast path).
    header = Header(basic, 0, 5, **{"headers": {"n": 2**40, "t": "x"}, "delivery-mode": 2})
    _, payload = unpack_frame(s, pack_frame(1, header))
    assert payload.properties == {"headers": {"n": 2**40, "t": "x"}, "delivery-mode": 2}
    assert payload.property_error is None

    _, payload = unpack_frame(s, pack_frame(1, Body(b"\xff\x00ab")))
    assert payload.content == b"\xff\x00ab"


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_deliver_and_ack(version):
    s = load(version)
    deliver = s.classes.byname["basic"].methods.byname["deliver"]
    args = ("ctag", 2 ** 40 + 7, True, "ex", "rk")
    _, payload = unpack_frame(s, pack_frame(3, Method(deliver, *args)))
    assert payload.method is deliver and payload.args == args
    ack = s.classes.byname["basic"].methods.byname["ack"]
    data = pack_frame(3, Method(ack, 9, False))
    assert data[7:-1] == b"\x00\x3c\x00\x50" + (9).to_bytes(8, "big") + b"\x00"
    _, payload = unpack_frame(s, data)
    assert payload.method is ack and payload.args == (9, False)


# ------------------------------------------------------------------ amqp_support._spec

# The scripts load spec files with amqp_support.load_spec (quicker), the
# tests above with txamqp's own loader: both must give the same spec.

def described(s):
    """Everything of a txamqp spec that txamqp and the scripts read, as plain values."""
    fields = lambda container: [(f.name, f.id, f.type, f.docs) for f in container]  # noqa: E731
    return {
        "spec": (s.major, s.minor, s.file),
        "constants": [(c.name, c.id, c.klass, c.docs) for c in s.constants],
        "classes": [(c.name, c.id, c.handler, c.docs, fields(c.fields),
                     [(m.name, m.id, m.content, m.synchronous, m.description, m.docs, m.response,
                       [r.name for r in m.responses], fields(m.fields), m.klass is c) for m in c.methods])
                    for c in s.classes],
        "channel methods": {name: (str(inspect.signature(f)), f.__doc__)
                            for name, f in vars(s.klass).items() if inspect.isfunction(f)},
    }


# A spec with what our two files lack: prose (<doc>, text in a method), a
# domain naming another domain, a field typed directly, and children of
# other kinds before the fields (a field's id is its place among them all).
DOCUMENTED = b"""<?xml version="1.0"?>
<amqp major="0" minor="9" revision="1">
  <constant name="frame-end" value="206" class="x"><doc>The end &amp; all.</doc></constant>
  <domain name="queue-name" type="name"/>
  <domain name="name" type="shortstr"><doc>A name.</doc></domain>
  <class name="basic" index="60" handler="channel">
    <doc>Messages.</doc>
    <field name="content-type" domain="queue-name"/>
    <method name="publish" index="40" content="1">Publish
      a message.
      <chassis name="server" implement="MUST"/>
      <doc>Goes to an exchange.</doc>
      <doc type="grammar">two docs</doc>
      <field name="exchange" domain="name"><doc>Where to.</doc></field>
      <field name="global" type="bit"/>
    </method>
    <method name="get" index="70" synchronous="1">
      <response name="get-ok"/><field name="queue" type="shortstr"/></method>
    <method name="get-ok" index="71" content="1" synchronous="0"> </method>
  </class>
</amqp>
"""


@pytest.mark.parametrize("name, data", [(path.name, path.read_bytes()) for path in FILES.values()]
                         + [("documented.xml", DOCUMENTED)])
def test_our_loader_gives_txamqps_spec(name, data):
    ours = our_spec.load_spec(data, name)
    theirs = txspec.load_string(data, specfilename=name)
    assert described(ours) == described(theirs)
    assert described(ours)["channel methods"]  # not empty: the comparison compared something


def test_our_loader_methods_invoke_with_the_same_arguments():
    calls = []

    class Channel(our_spec.load_spec(FILES["0-9-1"].read_bytes()).klass):
        def invoke(self, method, args, content=None):
            calls.append((method.klass.name, method.name, args, content))

    Channel().queue_declare(queue="q", durable=True)
    Channel().basic_publish(exchange="x", routing_key="k", content="c")
    assert calls == [("queue", "declare", (0, "q", False, True, False, False, False, {}), None),
                     ("basic", "publish", (0, "x", "k", False, False), "c")]
