"""Several "hosts" on this machine: network namespaces joined to the root one by veth pairs.

Host N lives in namespace ``<prefix>N``, reachable from the root namespace at 10.231.N.2
over a point-to-point link whose root end is 10.231.N.1. Nothing is routed between hosts
or out of the machine (forwarding stays as it is): traffic stays on these links.
Cutting a host off is ``link_down``: packets vanish without a reset, as when a cable or a
switch port dies — the hardest case for timeouts.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    index: int
    namespace: str
    root_link: str  # the veth end in the root namespace
    address: str  # this host's address, as the root namespace reaches it
    gateway: str  # the root namespace's address, as this host reaches it

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def link_down(self) -> None:
        """Pull the host's cable: its end goes down, the root end loses carrier. Packets on
        open connections vanish silently; new connections fail after ARP gives up (~3 s).
        (Downing the root end instead would remove the route: every send would fail at
        once with "network unreachable", far kinder than a real outage.)"""
        ip("netns", "exec", self.namespace, "ip", "link", "set", self.root_link + "p", "down")

    def link_up(self) -> None:
        ip("netns", "exec", self.namespace, "ip", "link", "set", self.root_link + "p", "up")


class Hosts:
    """``with Hosts(3) as hosts:`` — created on entry, removed on exit (also after a crash
    of an earlier run with the same pid-derived names)."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 100000
        self.hosts = [
            Host(i, f"shoalt{tag}h{i}", f"sht{tag}h{i}", f"10.231.{i}.2", f"10.231.{i}.1")
            for i in range(1, count + 1)
        ]

    def __enter__(self) -> list[Host]:
        self.remove()
        try:
            for host in self.hosts:
                peer = host.root_link + "p"
                ip("netns", "add", host.namespace)
                ip("link", "add", host.root_link, "type", "veth", "peer", "name", peer)
                ip("link", "set", peer, "netns", host.namespace)
                ip("addr", "add", f"{host.gateway}/30", "dev", host.root_link)
                ip("link", "set", host.root_link, "up")
                inside = ["netns", "exec", host.namespace, "ip"]
                ip(*inside, "addr", "add", f"{host.address}/30", "dev", peer)
                ip(*inside, "link", "set", peer, "up")
                ip(*inside, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self.hosts

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for host in self.hosts:
            ip("link", "del", host.root_link, check=False)  # takes its peer with it
            ip("netns", "del", host.namespace, check=False)
