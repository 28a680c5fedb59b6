"""The address phones use to join a room: this machine's network address, not 127.0.0.1.

Why: `make run` listens on 127.0.0.1, an address only this computer can open. A teacher who opens
the set-up page as http://127.0.0.1:5000 would otherwise put a join URL and a QR code on the
projector that no phone can reach. So the join URL is, in order:

1. HUMANLM_PUBLIC_URL when set (a reverse proxy, a school domain): used as given;
2. the address the teacher's browser used, when that is not a loopback address (the teacher
   opened http://192.168.1.20:5000 or a host name: phones can use the same);
3. when the browser used a loopback address (127.0.0.1, localhost) and the server listens on
   every interface (0.0.0.0, `make class`) or on a network address: this machine's network
   address with the same port;
4. otherwise the loopback address, marked unreachable, with the plain reason and the command
   that fixes it; the projector and the set-up page show both.

No Flask here: the caller passes the settings and the browser's URL (routes.py).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

# What the projector and the set-up page tell a teacher whose server only this computer reaches.
FIX_COMMAND = "make class"
FIX_COMMAND_CLI = "humanlm serve --host 0.0.0.0"
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "*"}
# A packet is never sent: connecting a UDP socket only asks the kernel which local address
# would carry traffic to this (private, unroutable) address, i.e. the default route's interface.
_PROBE_ADDRESS = ("10.255.255.255", 1)


@dataclass(frozen=True)
class JoinBase:
    """Where phones open the room: `url` (scheme://host[:port], no slash at the end) and
    whether phones on the network can reach it; if not, `problem` says why in plain words
    and `fix` is the command that makes it reachable (None when no command would)."""

    url: str
    reachable: bool
    problem: str | None = None
    fix: str | None = None

    @property
    def fix_cli(self) -> str | None:
        """The same fix without make (an installed humanlm)."""
        return FIX_COMMAND_CLI if self.fix else None


def is_loopback(host: str | None) -> bool:
    """127.x.x.x, ::1, localhost and *.localhost: addresses that never leave this computer."""
    name = (host or "").strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _usable(address: str) -> bool:
    """A network address another device could use (not loopback, link-local or 0.0.0.0)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def _default_route_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE_ADDRESS)
            return probe.getsockname()[0]
    except OSError:  # no route at all: no network, or a network without a gateway
        return None


def _interface_addresses() -> list[str]:
    """IPv4 addresses of the interfaces that are up (Linux; elsewhere an empty list). Catches
    a classroom access point without internet, which gives no default route."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl
    import struct

    siocgifaddr = 0x8915
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _hostname_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return [info[4][0] for info in infos]


def machine_addresses() -> list[str]:
    """This machine's IPv4 network addresses, the one of the default route first; [] when it
    has none (no network). Asked afresh each time: a laptop may join the Wi-Fi after start."""
    candidates = [_default_route_address(), *_interface_addresses(), *_hostname_addresses()]
    seen: list[str] = []
    for address in candidates:
        if address and _usable(address) and address not in seen:
            seen.append(address)
    return seen


def _with_host(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{shown}" + (f":{port}" if port and port != default else "")


def join_base(public_url: str | None, listen_host: str | None, browser_url: str) -> JoinBase:
    """The base URL phones join at, given HUMANLM_PUBLIC_URL, the address the server listens on
    (HUMANLM_HOST, or what `humanlm serve` was given) and the URL the teacher's browser used."""
    if public_url:
        return JoinBase(public_url.rstrip("/"), True)
    parts = urlsplit(browser_url)
    scheme, host, port = parts.scheme or "http", parts.hostname or "", parts.port
    browser_base = _with_host(scheme, host, port)
    if not is_loopback(host):
        return JoinBase(browser_base, True)
    listen = (listen_host or "").strip()
    if listen not in WILDCARD_HOSTS and not is_loopback(listen):
        return JoinBase(_with_host(scheme, listen, port), True)  # one network address
    if listen in WILDCARD_HOSTS:
        addresses = machine_addresses()
        if addresses:
            return JoinBase(_with_host(scheme, addresses[0], port), True)
        return JoinBase(
            browser_base, False,
            problem=f"This computer has no network address, so phones cannot reach {host}. "
            "Connect it to the classroom's Wi-Fi or network, then reload this page.",
        )
    return JoinBase(
        browser_base, False,
        problem=f"The server listens on {listen or host}, an address only this computer can "
        f"open, so phones cannot reach {host}.",
        fix=FIX_COMMAND,
    )
