"""An AMQP spec file loaded into txamqp's own spec objects, in half the time.

txamqp.spec.load_string parses the file with xml.sax into a tree whose every
lookup scans a node's children, builds the spec (txamqp's Spec, Constant,
Class, Method and Field objects), then, in Spec.post_load, compiles a Python
function for every method of the protocol twice: once into spec.klass, the
class txamqp mixes into each channel (chan.queue_declare and the others), and
once into spec.module, which neither txamqp nor we read.

load() builds the same objects, with the same values and in the same order,
and compiles each method once, with txamqp's own Method.define_method, into
spec.klass; spec.module is left out. A one-message run loads its spec file
in 3.7 ms instead of 7.5 (amqp0-9-1.xml), 5.5 instead of 10.7 (amqp0-8.xml).
tests/test_spec.py checks that spec files load here exactly as in txamqp.
"""

from xml.parsers import expat

from txamqp.spec import Class, Constant, Field, Method, Spec, pythonize


class Element:
    """An XML element: its name, attributes, child elements and the text
    directly in it (None if there is none), as txamqp's xmlutil.Node has them."""

    __slots__ = ("name", "attrs", "children", "text")

    def __init__(self, name, attrs):
        self.name = name
        self.attrs = attrs
        self.children = []
        self.text = None

    def named(self, name):
        return [child for child in self.children if child.name == name]

    def docs(self):
        return [doc.text for doc in self.named("doc")]


def parse(data):
    """The document element of the XML in data (bytes)."""
    top = Element(None, {})
    stack = [top]

    def start(name, attrs):
        element = Element(name, attrs)
        stack[-1].children.append(element)
        stack.append(element)

    def end(name):
        stack.pop()

    def text(chars):
        element = stack[-1]
        element.text = chars if element.text is None else element.text + chars

    parser = expat.ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    parser.Parse(data, True)
    return top.children[0]


def load_spec(data, filename=None):
    """txamqp's Spec for the spec file whose bytes are data."""
    root = parse(data)
    if root.name != "amqp":
        raise ValueError("the document element is <%s>, not <amqp>" % root.name)
    spec = Spec(int(root.attrs["major"]), int(root.attrs["minor"]), filename)
    for element in root.named("constant"):
        spec.constants.add(Constant(spec, element.attrs["name"], int(element.attrs["value"]),
                                    element.attrs.get("class"), element.docs()))
    # A domain names a type, or another domain.
    domains = {element.attrs["name"]: element.attrs["type"] for element in root.named("domain")}
    for class_element in root.named("class"):
        klass = Class(spec, class_element.attrs["name"], int(class_element.attrs["index"]),
                      class_element.attrs["handler"], class_element.docs())
        add_fields(klass.fields, class_element, domains)
        for element in class_element.named("method"):
            method = Method(klass, element.attrs["name"], int(element.attrs["index"]),
                            flag(element, "content"), [r.attrs["name"] for r in element.named("response")],
                            flag(element, "synchronous"), element.text, element.docs())
            add_fields(method.fields, element, domains)
            klass.methods.add(method)
        for method in klass.methods:  # the names of a class's responses are those of its own methods
            method.responses = [klass.methods.byname[name] for name in method.responses]
            for response in method.responses:
                response.response = True
        spec.classes.add(klass)
    methods = {}
    for klass in spec.classes:
        for method in klass.methods:
            name = pythonize(klass.name + "_" + method.name)
            methods[name] = method.define_method(name)
    spec.klass = type("Amqp%s%s" % (spec.major, spec.minor), (), methods)
    return spec


def add_fields(fields, element, domains):
    """The <field> children of element, into txamqp's container fields. A
    field's id is its place among all of element's children, as in txamqp."""
    for index, child in enumerate(element.children):
        if child.name == "field":
            kind = child.attrs["domain"] if "domain" in child.attrs else child.attrs["type"]
            while kind in domains and domains[kind] != kind:
                kind = domains[kind]
            fields.add(Field(child.attrs["name"], index, kind, child.docs()))


def flag(element, name):
    """A 0/1 attribute of element, False when it is not there."""
    return bool(int(element.attrs[name])) if name in element.attrs else False
