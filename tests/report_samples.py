"""Report messages as the big receivers mail them, written from the RFCs' schemas (RFC 7489
appendix C for DMARC aggregate XML, RFC 8460 §4.3 for TLS-RPT JSON) and shaped like what
Google, Microsoft and Yahoo send (packing, content type, file name, sender), plus the hostile
ones: malformed XML, an entity bomb, a zip bomb, a 50 MB attachment. Shared by the unit tests
and the container test."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from datetime import UTC, datetime
from email.message import EmailMessage

DAY = datetime(2026, 12, 4, tzinfo=UTC)  # the reports' day, unless told another


def span(day: datetime) -> tuple[int, int]:
    """A report's period: the UTC day, in seconds since the epoch (RFC 7489 appendix C)."""
    return int(day.timestamp()), int(day.timestamp()) + 86399
FORGER = "198.51.100.66"  # a documentation address: not ours, failing DMARC as us


def dmarc_xml(org: str, report_id: str, domain: str, rows: list[tuple[str, int, bool, bool]],
              *, namespace: str = "", version: bool = False, day: datetime = DAY) -> bytes:
    """An aggregate report; rows: (source address, count, DKIM aligned, SPF aligned)."""
    begin, end = span(day)
    records = "".join(f"""
  <record>
    <row>
      <source_ip>{ip}</source_ip>
      <count>{count}</count>
      <policy_evaluated>
        <disposition>{'none' if dkim or spf else 'reject'}</disposition>
        <dkim>{'pass' if dkim else 'fail'}</dkim>
        <spf>{'pass' if spf else 'fail'}</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>{'receiver.example'}</envelope_to>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <dkim><domain>{domain}</domain><selector>s1</selector>
        <result>{'pass' if dkim else 'fail'}</result></dkim>
      <spf><domain>{domain}</domain><scope>mfrom</scope>
        <result>{'pass' if spf else 'fail'}</result></spf>
    </auth_results>
  </record>""" for ip, count, dkim, spf in rows)
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback{xmlns}>
  {'<version>1.0</version>' if version else ''}
  <report_metadata>
    <org_name>{org}</org_name>
    <email>dmarc-noreply@{org}</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>{begin}</begin><end>{end}</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain><adkim>s</adkim><aspf>s</aspf><p>reject</p><sp>reject</sp>
    <pct>100</pct><fo>0</fo>
  </policy_published>{records}
</feedback>
""".encode()


def tls_json(org: str, report_id: str, domain: str, successful: int,
             failures: list[tuple[str, int]], day: datetime = DAY) -> bytes:
    """A TLS report; failures: (result type, count)."""
    return json.dumps({
        "organization-name": org,
        "date-range": {"start-datetime": f"{day:%Y-%m-%d}T00:00:00Z",
                       "end-datetime": f"{day:%Y-%m-%d}T23:59:59Z"},
        "contact-info": f"smtp-tls-reporting@{org.split()[0].lower()}.example",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: enforce",
                                         f"mx: mail.{domain}", "max_age: 86400"],
                       "mx-host": [f"mail.{domain}"]},
            "summary": {"total-successful-session-count": successful,
                        "total-failure-session-count": sum(c for _, c in failures)},
            "failure-details": [{"result-type": result, "sending-mta-ip": "192.0.2.10",
                                 "receiving-mx-hostname": f"mail.{domain}",
                                 "receiving-ip": "203.0.113.25", "failed-session-count": count}
                                for result, count in failures],
        }],
    }, indent=2).encode()


def message(sender: str, recipient: str, subject: str, attachment: bytes, content_type: str,
            filename: str) -> bytes:
    """A report message: a short text part and the report attached (RFC 7489 §7.2.1.1)."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, recipient, subject
    mail.set_content(f"This is an aggregate report. {subject}")
    maintype, subtype = content_type.split("/")
    mail.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return mail.as_bytes()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def good_samples(domain: str, ours: str, to: str, day: datetime = DAY) -> dict[str, bytes]:
    """Google's DMARC (zip), Microsoft's (gzip), Yahoo's (gzip), a small receiver's raw XML,
    Google's and Microsoft's TLS reports (application/tlsrpt+gzip). `ours`: our address."""
    begin, end = span(day)
    name = f"!{domain}!{begin}!{end}"
    google = dmarc_xml("google.com", "12345678901234567890", domain,
                       [(ours, 120, True, True), (FORGER, 3, False, False)], day=day)
    microsoft = dmarc_xml("Enterprise Outlook", "a1b2c3d4e5f6", domain,
                          [(ours, 40, True, True)], version=True,
                          namespace="urn:ietf:params:xml:ns:dmarc-2.0", day=day)
    yahoo = dmarc_xml("Yahoo", "1733270400.123456", domain,
                      [(ours, 7, True, False), ("2001:db8::66", 1, False, False)], day=day)
    small = dmarc_xml("small.example", "small-1", domain, [(ours, 2, True, True)], day=day)
    return {
        "google-dmarc": message("noreply-dmarc-support@google.com", to,
                                f"Report domain: {domain} Submitter: google.com",
                                zipped(f"google.com{name}.xml", google), "application/zip",
                                f"google.com{name}.zip"),
        "microsoft-dmarc": message("dmarcreport@microsoft.com", to,
                                   f"Report Domain: {domain} Submitter: "
                                   "enterprise.protection.outlook.com",
                                   gzip.compress(microsoft), "application/gzip",
                                   f"enterprise.protection.outlook.com{name}.xml.gz"),
        "yahoo-dmarc": message("dmarc_support@yahoo.com", to,
                               f"Report Domain: {domain} Submitter: yahoo.com",
                               gzip.compress(yahoo), "application/gzip",
                               f"yahoo.com{name}.xml.gz"),
        "raw-xml-dmarc": message("dmarc@small.example", to, f"Report Domain: {domain}", small,
                                 "text/xml", f"small.example{name}.xml"),
        "google-tls": message("noreply-smtp-tls-reporting@google.com", to,
                              f"Report Domain: {domain} Submitter: google.com",
                              gzip.compress(tls_json("Google Inc.", f"{day:%Y-%m-%d}T00:00:00Z_"
                                                     + domain, domain, 250, [], day)),
                              "application/tlsrpt+gzip",
                              f"google.com!{domain}!{begin}!{end}!001.json.gz"),
        "microsoft-tls": message("tlsrpt-noreply@microsoft.com", to,
                                 f"Report Domain: {domain} Submitter: microsoft.com",
                                 gzip.compress(tls_json(
                                     "Microsoft Corporation", "133774560000000000+" + domain,
                                     domain, 90, [("certificate-expired", 4),
                                                  ("validation-failure", 1)], day)),
                                 "application/tlsrpt+gzip",
                                 f"microsoft.com!{domain}!{begin}!{end}.json.gz"),
    }


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>
"""


def zip_bomb(gibibytes: int = 2, mebibytes: int = 0) -> bytes:
    """A small zip whose one member expands to `gibibytes` GiB (plus `mebibytes` MiB) of
    zeros. The deflate stream is one MiB of zeros compressed once, ended by a full flush (which
    resets the compressor, so every MiB compresses alike) and repeated; the CRC is left wrong,
    as a bomb's may be (zipfile checks it only at the member's end, which is never reached)."""
    size = gibibytes * 1024 ** 3 + mebibytes * 1024 ** 2
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(1024 * 1024)) + compressor.flush(zlib.Z_FULL_FLUSH)
    deflated = block * (size // (1024 * 1024)) + compressor.flush()
    crc = 0
    info = zipfile.ZipInfo("report.xml", date_time=(2026, 12, 4, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # The member's data is written as made above: zipfile only records sizes and CRC.
        info.file_size, info.compress_size, info.CRC = size, len(deflated), crc
        archive.fp.write(info.FileHeader(zip64=True))  # type: ignore[union-attr]
        archive.fp.write(deflated)  # type: ignore[union-attr]
        info.header_offset = 0
        archive.filelist.append(info)
        archive.NameToInfo[info.filename] = info
        archive.start_dir = archive.fp.tell()  # type: ignore[union-attr]
    return buffer.getvalue()


HOSTILE = ("malformed", "entity-bomb", "zip-bomb", "big")


def hostile_sample(name: str, to: str, big_size: int = 50 * 1000 * 1000) -> bytes:
    """Malformed XML, an entity bomb, a zip bomb or a 50 MB attachment, each as a report."""
    sender = "dmarc@bad.example"
    if name == "malformed":
        return message(sender, to, "malformed", gzip.compress(
            b"<feedback><report_metadata><org_name>x</org_name></feedback>"),
            "application/gzip", "bad.example!x!1!2.xml.gz")
    if name == "entity-bomb":
        return message(sender, to, "billion laughs", BILLION_LAUGHS, "text/xml",
                       "bad.example!lol!1!2.xml")
    if name == "zip-bomb":
        return message(sender, to, "zip bomb", zip_bomb(), "application/zip",
                       "bad.example!bomb!1!2.zip")
    if name == "big":
        return big_message(sender, to, big_size)
    raise ValueError(name)


def big_message(sender: str, to: str, size: int) -> bytes:
    """A report of `size` bytes of XML-looking text sent as 7bit, so that the message (about
    `size` bytes on the wire) passes Postfix's message_size_limit (50 MiB) and reaches us."""
    line = b"<!-- " + b"x" * 92 + b" -->\r\n"  # 101 bytes
    body = line * (size // len(line))
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: 50 MB\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="big"\r\n\r\n--big\r\n'
            "Content-Type: text/plain\r\n\r\n50 MB of report\r\n--big\r\n"
            "Content-Type: text/xml\r\nContent-Transfer-Encoding: 7bit\r\n"
            'Content-Disposition: attachment; filename="bad.example!big!1!2.xml"\r\n\r\n')
    return head.encode() + b"<feedback>\r\n" + body + b"</feedback>\r\n--big--\r\n"
