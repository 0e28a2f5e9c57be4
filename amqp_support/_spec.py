"""Speed only: an AMQP spec file loaded into txamqp's own spec objects, in half the time.

load_spec() builds what txamqp.spec.load_string does (the same objects, values
and order), but parses with expat into a light tree (txamqp's scans a node's
children on every lookup) and compiles each method once, with txamqp's
Method.define_method, into spec.klass (the class txamqp mixes into each
channel); txamqp compiles each twice, the second time into spec.module, which
nothing reads. tests/test_spec.py checks that both load every spec file alike.
"""

from typing import Any
from xml.parsers import expat

from txamqp.spec import Class, Constant, Field, Method, Spec, pythonize


class Element:
    """An XML element as txamqp's xmlutil.Node has it; text: what is directly in it."""

    __slots__ = ("name", "attrs", "children", "text")

    def __init__(self, name: str | None, attrs: dict[str, str]) -> None:
        self.name = name
        self.attrs = attrs
        self.children: list[Element] = []
        self.text: str | None = None

    def named(self, name: str) -> list["Element"]:
        return [child for child in self.children if child.name == name]

    def docs(self) -> list[str | None]:
        return [doc.text for doc in self.named("doc")]


def parse(data: bytes) -> Element:
    """The document element of the XML in data."""
    top = Element(None, {})
    stack = [top]

    def start(name: str, attrs: dict[str, str]) -> None:
        element = Element(name, attrs)
        stack[-1].children.append(element)
        stack.append(element)

    def end(name: str) -> None:
        stack.pop()

    def text(chars: str) -> None:
        element = stack[-1]
        element.text = chars if element.text is None else element.text + chars

    parser = expat.ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    parser.Parse(data, True)
    return top.children[0]


def load_spec(data: bytes, filename: str | None = None) -> Spec:
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
    methods: dict[str, Any] = {}  # each method's function, by its Python name
    for klass in spec.classes:
        for method in klass.methods:
            name = pythonize(klass.name + "_" + method.name)
            methods[name] = method.define_method(name)
    spec.klass = type("Amqp%s%s" % (spec.major, spec.minor), (), methods)
    return spec


def add_fields(fields: Any, element: Element, domains: dict[str, str]) -> None:
    """The <field> children of element, into fields (txamqp's container), each
    with its place among all of element's children as its id, as in txamqp."""
    for index, child in enumerate(element.children):
        if child.name == "field":
            kind = child.attrs["domain"] if "domain" in child.attrs else child.attrs["type"]
            while kind in domains and domains[kind] != kind:
                kind = domains[kind]
            fields.add(Field(child.attrs["name"], index, kind, child.docs()))


def flag(element: Element, name: str) -> bool:
    """A 0/1 attribute of element, False when it is not there."""
    return bool(int(element.attrs[name])) if name in element.attrs else False
