"""Several hosts on one machine, for the distributed tests: network namespaces on a bridge of their own.

Each host is a network namespace (`ip netns`) whose one interface (a veth) plugs into a bridge that lives in
a namespace of its own; the test process reaches the hosts through one more veth on that bridge. Nothing
is routed anywhere else: traffic stays on these namespaces' own addresses (one /24 of 10.213.0.0/16) and
on loopback. Where `ip netns` cannot be used (no root, no iproute2), the hosts fall back to processes on
this machine's loopback (`Hosts.isolated` is then False, and `Hosts.describe()` says so).
"""

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from servers import Server, free_port, launch

SUBNET = "10.213"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def namespaces_available() -> bool:
    """Whether this process may make network namespaces (root and iproute2)."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    probe = f"psprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError:
        return False
    _ip("netns", "delete", probe)
    return True


class Host:
    def __init__(self, name: str, address: str, netns: str | None) -> None:
        self.name = name
        self.address = address  # where the others (and the tests) reach it
        self.netns = netns  # None: a process on loopback (the fallback)

    def command(self, args: list[str]) -> list[str]:
        """`args` run on this host, under its own host name (a UTS namespace), as on another machine."""
        if not self.netns:
            return args
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *args]
        return ["ip", "netns", "exec", self.netns, *named]

    def start(self, args: list[str], port: int, env: dict[str, str], log: Path, name: str) -> Server:
        """A server on this host; `args` should listen on `self.address`:`port`."""
        return launch(self.command(args), f"http://{self.address}:{port}", env, log, name=f"{name} on {self.name}")

    def link_down(self) -> None:
        """The host drops off the network: nothing reaches it and it reaches nothing (its processes live on)."""
        if self.netns:
            _ip("-n", self.netns, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        if self.netns:
            _ip("-n", self.netns, "link", "set", "eth0", "up")

    def kill_everything(self) -> None:
        """SIGKILL every process on the host, as a host that vanishes (namespaced hosts only)."""
        if not self.netns:
            return
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def free_port(self) -> int:
        # Each namespace has all its ports; on loopback, hosts share them.
        return free_port()


class Hosts:
    """`with Hosts(["db", "api1", "api2", "worker"]) as hosts: hosts["api1"].start(...)`."""

    def __init__(self, names: list[str], isolated: bool | None = None) -> None:
        self.names = names
        self.isolated = namespaces_available() if isolated is None else isolated
        tag = os.getpid() % 100000
        self._tag = tag
        self._subnet = f"{SUBNET}.{tag % 250 + 1}"
        self._switch = f"ps{tag}-switch"
        self._made: list[str] = []
        self.hosts: dict[str, Host] = {}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def describe(self) -> str:
        if self.isolated:
            return f"{len(self.hosts)} hosts in network namespaces on {self._subnet}.0/24: " + ", ".join(
                f"{host.name} {host.address}" for host in self.hosts.values()
            )
        return f"no network namespaces here: {len(self.hosts)} 'hosts' are processes on loopback"

    def __enter__(self) -> "Hosts":
        if not self.isolated:
            self.hosts = {name: Host(name, "127.0.0.1", None) for name in self.names}
            return self
        try:
            self._make()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make(self) -> None:
        switch = self._switch
        _ip("netns", "add", switch)
        self._made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for index, name in enumerate(self.names, start=1):
            netns = f"ps{self._tag}-{name}"
            _ip("netns", "add", netns)
            self._made.append(netns)
            port = f"p{index}"
            _ip("-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", switch)
            _ip("-n", netns, "addr", "add", f"{self._subnet}.{index}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            self.hosts[name] = Host(name, f"{self._subnet}.{index}", netns)
        # The tests' own way in: a veth from this namespace to the bridge, on the same /24 only.
        outside = f"ps{self._tag}t"
        _ip("link", "add", outside, "type", "veth", "peer", "name", "tests", "netns", switch)
        self._outside = outside
        _ip("addr", "add", f"{self._subnet}.254/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", switch, "link", "set", "tests", "master", "br0", "up")

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts.values():
            host.kill_everything()
        if getattr(self, "_outside", None):
            subprocess.run(["ip", "link", "delete", self._outside], capture_output=True)
        for netns in reversed(self._made):
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        self._made = []
