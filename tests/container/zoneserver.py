"""BIND as the authoritative server of the test domains, in a container on the test network.

It serves what the user would publish: the zones `mailboot dns --zone` prints, edited the way a
user edits them at the DNS provider (a record left out, a value changed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.container.containers import ROOT, Container, unique_name
from tests.container.dockercli import build, docker
from tests.container.pebble_harness import DockerNetwork
from tests.polling import eventually

IMAGE = "mailboot-bind:test"
SOA = ("@ 3600 IN SOA ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 60\n"
       "@ 3600 IN NS ns1.example.net.\n")
OPTIONS = ('options { directory "/var/cache/bind"; listen-on { any; }; listen-on-v6 { none; }; '
           'recursion yes; allow-recursion { any; }; dnssec-validation no; };\ncontrols { };\n')


@dataclass
class ZoneServer:
    name: str
    ip: str
    directory: Path

    def serve(self, zones: dict[str, str]) -> None:
        """Serve exactly these zones (domain -> records in zone-file form), restarting BIND."""
        config = [OPTIONS]
        for old in self.directory.glob("*.zone"):
            old.unlink()
        for domain, records in zones.items():
            path = self.directory / f"{domain}.zone"
            if domain == "example.net":  # the name server's own address, in its zone
                records += f"ns1 3600 IN A {self.ip}\n"
            path.write_text(f"$ORIGIN {domain}.\n{SOA}{records}")
            path.chmod(0o644)
            config.append(f'zone "{domain}" {{ type primary; file "/zones/{domain}.zone"; }};\n')
        (self.directory / "named.conf").write_text("".join(config))
        (self.directory / "named.conf").chmod(0o644)
        docker("restart", "-t", "1", self.name)
        self.wait_serving(next(iter(zones)))

    def wait_serving(self, domain: str, timeout: float = 20) -> None:
        def answers() -> bool:
            answer = docker("exec", self.name, "dig", "+short", "@127.0.0.1", domain, "SOA",
                            check=False)
            return answer.returncode == 0 and bool(answer.stdout.strip())

        eventually(answers, timeout, lambda: f"BIND to serve {domain}: "
                   + docker("logs", self.name, check=False).stderr, interval=0.3)

    def txt(self, name: bytes) -> bytes | None:
        """The TXT record at `name` as served, its strings joined (dkimpy's `dnsfunc`)."""
        answer = docker("exec", self.name, "dig", "+short", "@127.0.0.1",
                        name.decode().rstrip("."), "TXT").stdout
        strings = re.findall(r'"((?:[^"\\]|\\.)*)"', answer.splitlines()[0]) if answer else []
        return "".join(strings).encode() if strings else None

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def start_zone_server(network: DockerNetwork, directory: Path,
                      zones: dict[str, str]) -> ZoneServer:
    build(IMAGE, ROOT / "tests/container/bind_image", timeout=600)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ip = network.allocate()
    dns = ZoneServer(unique_name("mailboot-bind"), ip, directory)
    (directory / "named.conf").write_text(OPTIONS)
    docker("run", "-d", "--name", dns.name, "--network", network.name, "--ip", ip,
           "-v", f"{directory}:/zones:ro", IMAGE)
    dns.serve(zones)
    return dns


def supporting_zones(mail_ip: str) -> dict[str, str]:
    """The name server's own zone, the mail server's reverse zone, and empty blocklists (so
    postscreen's lookups are answered at once): what every world serves beside its domains."""
    octets = mail_ip.split(".")
    return {"example.net": "",
            f"{octets[2]}.{octets[1]}.{octets[0]}.in-addr.arpa":
                f"{octets[3]} 300 IN PTR mail.example.com.\n",
            "zen.spamhaus.org": "", "dbl.spamhaus.org": "", "list.dnswl.org": ""}


def printed_zone(mail: Container, domain: str) -> str:
    """The records of one domain exactly as `mailboot dns --zone` prints them for the user."""
    return mail.exec("mailboot", "dns", "--zone", "--domain", domain).stdout


def without(zone: str, name: str, rtype: str) -> str:
    """The zone with one record left out, as a user who has not added it yet."""
    return "".join(line for line in zone.splitlines(keepends=True)
                   if not (line.split()[:1] == [name] and f" IN {rtype} " in line))
