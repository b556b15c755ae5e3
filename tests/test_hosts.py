"""The test hosts: network namespaces on a bridge of their own (what the distributed tests run on)."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import running_in_ci
from hosts import Hosts, namespaces_available


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    if not namespaces_available():
        if running_in_ci():
            pytest.fail("network namespaces are needed (root and iproute2: apt-get install iproute2)")
        pytest.skip("no network namespaces here (needs root and iproute2)")


def test_hosts_reach_each_other_and_the_tests_reach_them_until_a_link_goes_down(tmp_path: Path) -> None:
    with Hosts(["a", "b"]) as hosts:
        a, b = hosts["a"], hosts["b"]
        assert a.address != b.address
        port = a.free_port()
        server = a.start(
            [sys.executable, "-m", "http.server", str(port), "--bind", a.address, "--directory", str(tmp_path)],
            port,
            {},
            tmp_path / "a.log",
            "a file server",
        )
        (tmp_path / "hello.txt").write_text("hello")
        server.wait_until_ready(30, path="/hello.txt")
        assert httpx.get(f"{server.url}/hello.txt").text == "hello"  # from the tests
        fetch = [
            sys.executable,
            "-c",
            f"import urllib.request as r; print(r.urlopen('{server.url}/hello.txt', timeout=5).read().decode())",
        ]
        assert subprocess.run(b.command(fetch), capture_output=True, text=True, check=True).stdout.strip() == "hello"
        # b's own loopback is its own: a's server is not there.
        local = [sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"]
        assert subprocess.run(b.command(local), capture_output=True).returncode != 0

        a.link_down()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.url}/hello.txt", timeout=2)
        a.link_up()
        assert httpx.get(f"{server.url}/hello.txt", timeout=5).text == "hello"

        a.kill_everything()
        server.process.wait(10)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert a.netns not in left
    assert b.netns not in left
