"""The three printed forms of the record set: zone file, table for web forms, and JSON.

All three are made from the same `RecordGroup`s, so they can't disagree; with the findings of
`doctor`, each record also shows its status and what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from mailboot.records.build import Record, RecordGroup, Where
from mailboot.records.doctor import Finding

Findings = Mapping[Record, Finding]

# RFC 1035 §3.3.14: a TXT record holds strings of at most 255 bytes each; longer values (a DKIM
# key) are split into several strings, which receivers join without spaces (RFC 6376 §3.6.2.2).
MAX_TXT_STRING = 255
_PLACEHOLDER_VALUES = {"A": "<PUBLIC_IPV4>", "AAAA": "<PUBLIC_IPV6>"}


def txt_strings(value: str) -> list[str]:
    """Split a TXT value into strings of at most 255 bytes, never inside a character."""
    data = value.encode("ascii")
    chunks = range(0, len(data), MAX_TXT_STRING)
    return [data[i : i + MAX_TXT_STRING].decode("ascii") for i in chunks]


def quote_txt(value: str) -> str:
    """The zone-file form of a TXT value: each string quoted, `"` and `\\` escaped."""
    strings = txt_strings(value) or [""]
    return " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in strings)


def shown_value(record: Record) -> str:
    """The value as written in the zone form (without TXT quoting), or its placeholder."""
    if record.value is None:
        return _PLACEHOLDER_VALUES.get(record.rtype, "<value>")
    return record.value


def zone_rdata(record: Record) -> str:
    if record.rtype == "TXT" and record.value is not None:
        return quote_txt(record.value)
    return shown_value(record)


def zone_line(record: Record) -> str:
    return f"{record.fqdn:<40} {record.ttl:>5} IN {record.rtype:<5} {zone_rdata(record)}"


def zone_text(groups: Sequence[RecordGroup], findings: Findings | None = None) -> str:
    """A zone file a DNS server loads unchanged: absolute names, one comment per record.

    Records that don't belong in a zone (PTR, set at the hosting provider) and placeholders for
    values not known yet are printed as comments, so the file still loads.
    """
    lines = [
        "; DNS records for this mailboot server. Names are absolute (they end in a dot).",
        "; Records marked (optional) are recommended; mail works without them.",
    ]
    for group in groups:
        lines += ["", f"; ===== {group.title}: {group.note} ====="]
        for record in group.records:
            lines += _zone_record_lines(record, (findings or {}).get(record))
    return "\n".join(lines) + "\n"


def _zone_record_lines(record: Record, finding: Finding | None) -> list[str]:
    comment = f"; {record.rtype}: {record.purpose}{'' if record.required else ' (optional)'}"
    if finding is not None:
        comment += f" [{finding.status.upper()}]"
        if finding.hint and not record.placeholder:
            comment += f"\n;   -> {finding.hint}"
    if record.placeholder:
        return [comment, f"; NOT KNOWN YET: {record.placeholder}", "; " + zone_line(record)]
    if record.hold:
        return [comment, f"; HOLD BACK: {record.hold}:", "; " + zone_line(record)]
    if record.where is Where.PROVIDER:
        return [comment, "; set at the hosting provider, not in a zone:", "; " + zone_line(record)]
    return [comment, zone_line(record)]


def form_value(record: Record) -> str:
    """The value as web forms take it: one line, unquoted, host names without the final dot."""
    value = shown_value(record)
    if record.rtype in ("MX", "CNAME", "SRV", "PTR") and value.endswith(".") and value != "0 0 0 .":
        return value[:-1]
    return value


def table_text(groups: Sequence[RecordGroup], findings: Findings | None = None) -> str:
    """A table per zone for providers' web forms: relative names, whole unquoted values."""
    lines = [
        "For web forms: add each record at the DNS provider of its domain. NAME is relative to "
        "the domain (@ is the domain itself).",
        "Paste VALUE as one line, exactly as shown, without quotes. Host names in VALUE are "
        "complete: if your provider appends the domain to them, end them with a dot.",
    ]
    for group in groups:
        lines += ["", f"== {group.title}: {group.note} =="]
        rows = [("NAME", "TYPE", "NEED", "STATUS" if findings else "", "VALUE")]
        rows += [
            (r.relative_name, r.rtype,
             "HOLD" if r.hold else "required" if r.required else "optional",
             findings[r].status.value if findings and r in findings else "", form_value(r))
            for r in group.records
        ]
        width = max(len(row[0]) for row in rows)
        status_width = 9 if findings else 0
        lines += [f"{n:<{width}}  {t:<5}  {need:<8}  {st:<{status_width}}{v}".rstrip()
                  for n, t, need, st, v in rows]
        lines += [f"  note for {r.relative_name} {r.rtype}: {r.placeholder or r.hold}"
                  for r in group.records if r.placeholder or r.hold]
    return "\n".join(lines) + "\n"


def record_dict(record: Record) -> dict[str, object]:
    return {
        "name": record.fqdn,
        "kind": str(record.kind),
        "type": record.rtype,
        "value": record.value,
        "ttl": record.ttl,
        "purpose": record.purpose,
        "where": str(record.where),
        "zone": record.zone + "." if record.zone else None,
        "relative_name": record.relative_name,
        "required": record.required,
        "placeholder": record.placeholder,
        "hold": record.hold,
    }


def json_text(groups: Sequence[RecordGroup], findings: Findings | None = None) -> str:
    """A JSON array, one object per record (`kind` says what it is for; TXT values joined, other
    types as presented); with findings, each object also has `status`, `found` and `hint`."""
    records = []
    for group in groups:
        for record in group.records:
            entry = record_dict(record)
            if findings and record in findings:
                finding = findings[record]
                entry |= {"status": finding.status.value, "found": list(finding.found),
                          "hint": finding.hint}
            records.append(entry)
    return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
