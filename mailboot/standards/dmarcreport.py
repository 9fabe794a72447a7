"""DMARC aggregate reports (RFC 7489 §7.2 and appendix C): the XML receivers mail to our `rua`,
read safely and turned into typed rows.

Safety first, because anyone can mail us XML: the document is parsed by expat with a handler
that refuses any DOCTYPE, so no entity is ever declared, let alone expanded (a "billion laughs"
document stops at its first line), and no external entity or DTD is fetched. The element count
and depth are bounded too; the caller bounds the size (`inbound.reports`). Standard library only.

What is kept of a report is what the summaries need: who reported, for which domain and period,
and per row the sending address, its message count, the policy's disposition and the DMARC-
aligned DKIM and SPF results (`policy_evaluated`: RFC 7489 appendix C calls them "the DMARC-
aligned authentication results"), with the header From domain. Namespaced documents (the
DMARCbis drafts' `urn:ietf:params:xml:ns:dmarc-2.0`) read the same: names are taken without
their prefix.
"""

from __future__ import annotations

import ipaddress
import xml.parsers.expat
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_ELEMENTS = 500_000  # a report of 50,000 rows has about 20 elements each
MAX_DEPTH = 20  # appendix C nests 5 deep
MAX_TEXT = 1024  # characters of one element's text: addresses, domains, ids


class ReportError(ValueError):
    """The report can't be read: what is wrong with it, in words for the log."""


@dataclass
class Element:
    """One XML element: its local name, its text and its children (a minimal tree)."""

    name: str
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def child(self, name: str) -> Element | None:
        return next((c for c in self.children if c.name == name), None)

    def all(self, name: str) -> list[Element]:
        return [c for c in self.children if c.name == name]

    def value(self, *path: str) -> str:
        """The stripped text at `path` below this element; "" where it is absent."""
        node: Element | None = self
        for name in path:
            node = node.child(name) if node is not None else None
        return node.text.strip() if node is not None else ""


def parse_xml(data: bytes) -> Element:
    """The document's root element. Raises ReportError for malformed XML, any DOCTYPE (entity
    declarations live there: refusing it refuses every entity expansion), too many elements,
    too deep a nesting or too long a text."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Element] = []
    root: list[Element] = []
    count = [0]

    def refuse_doctype(name: str, *_args: object) -> None:
        raise ReportError(f"it declares a DOCTYPE ({name}); reports never do, and its entities "
                          "could expand without bound")

    def refuse_entity(name: str, *_args: object) -> None:
        raise ReportError(f"it declares the entity {name!r}")

    def start(name: str, _attributes: dict[str, str]) -> None:
        count[0] += 1
        if count[0] > MAX_ELEMENTS or len(stack) >= MAX_DEPTH:
            raise ReportError(f"it has more than {MAX_ELEMENTS} elements or nests deeper than "
                              f"{MAX_DEPTH}")
        element = Element(name.rpartition(":")[2])
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        # Indentation between children isn't text; appendix C's texts are all in leaves.
        if stack and not (stack[-1].children and not data.strip()):
            if len(stack[-1].text) + len(data) > MAX_TEXT:
                raise ReportError(f"an element's text is longer than {MAX_TEXT} characters")
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as error:
        raise ReportError(f"it is not well-formed XML ({error})") from None
    return root[0]


@dataclass(frozen=True)
class Row:
    """One row of a report: mail from one address, judged alike (RFC 7489 appendix C)."""

    source: str  # the sending address, normalised
    count: int
    disposition: str  # none, quarantine or reject: what the receiver did
    dkim_aligned: bool  # policy_evaluated/dkim = pass
    spf_aligned: bool  # policy_evaluated/spf = pass
    header_from: str

    @property
    def passed(self) -> bool:
        """DMARC passes when either aligned identifier passes (RFC 7489 §4.2)."""
        return self.dkim_aligned or self.spf_aligned


@dataclass(frozen=True)
class AggregateReport:
    """A DMARC aggregate report: who sent it, about which domain and period, and its rows."""

    org_name: str
    report_id: str
    domain: str  # policy_published/domain: where the receiver found our record
    begin: datetime
    end: datetime
    rows: tuple[Row, ...]


def parse_report(data: bytes) -> AggregateReport:
    """An aggregate report from its XML. Raises ReportError when the XML is unsafe or malformed
    (`parse_xml`) or a required part of appendix C's schema is missing or wrong."""
    root = parse_xml(data)
    if root.name != "feedback":
        raise ReportError(f"its root element is <{root.name}>, not <feedback> (RFC 7489 "
                          "appendix C)")
    org, report_id = root.value("report_metadata", "org_name"), root.value("report_metadata",
                                                                             "report_id")
    domain = root.value("policy_published", "domain").lower().rstrip(".")
    if not org or not report_id or not domain:
        raise ReportError("it lacks report_metadata/org_name, report_id or "
                          "policy_published/domain (RFC 7489 appendix C)")
    begin = _timestamp(root.value("report_metadata", "date_range", "begin"))
    end = _timestamp(root.value("report_metadata", "date_range", "end"))
    rows = tuple(_row(record) for record in root.all("record"))
    return AggregateReport(org, report_id, domain, begin, end, rows)


def _row(record: Element) -> Row:
    row = record.child("row") or Element("row")
    try:
        source = str(ipaddress.ip_address(row.value("source_ip")))
        count = int(row.value("count"))
    except ValueError:
        raise ReportError(f"a record's source_ip {row.value('source_ip')!r} or count "
                          f"{row.value('count')!r} is not valid") from None
    if count < 0:
        raise ReportError(f"a record's count is negative ({count})")
    return Row(source, count, row.value("policy_evaluated", "disposition").lower() or "none",
               row.value("policy_evaluated", "dkim").lower() == "pass",
               row.value("policy_evaluated", "spf").lower() == "pass",
               record.value("identifiers", "header_from").lower())


def _timestamp(text: str) -> datetime:
    """Appendix C's date_range: seconds since the epoch, UTC."""
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (ValueError, OverflowError, OSError):
        raise ReportError(f"its date_range holds {text!r}, not seconds since the epoch") from None
