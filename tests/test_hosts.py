"""Unit tests for wsservice.hosts: Host header parsing, loopback names and addresses, and
HostPolicy (which listeners check, which names they serve)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from wsservice.hosts import HostPolicy, host_name, is_loopback_address, is_loopback_name


class HostNameTests(SynchronousTestCase):
    def test_names_and_ports(self) -> None:
        self.assertEqual(host_name("Example.COM:8080"), "example.com")
        self.assertEqual(host_name(" localhost "), "localhost")
        self.assertEqual(host_name("localhost."), "localhost")
        self.assertEqual(host_name("127.0.0.1:1"), "127.0.0.1")
        self.assertEqual(host_name("host:"), "host")  # RFC 3986: the port may be empty

    def test_ipv6(self) -> None:
        self.assertEqual(host_name("[::1]:8080"), "[::1]")
        self.assertEqual(host_name("[0:0:0:0:0:0:0:1]"), "[::1]")
        self.assertEqual(host_name("[2001:DB8::A]"), "[2001:db8::a]")

    def test_not_hosts(self) -> None:
        for value in (None, "", " ", ":80", "a b", "[::1", "[nothex]", "[::1]x", "host:port",
                      "host:1:2", "ex\u00e4mple.com", "host:123456", "a..b", ".", "\x00",
                      "user@host", "host/path", "::1"):
            self.assertIsNone(host_name(value), value)


class LoopbackTests(SynchronousTestCase):
    def test_loopback_names(self) -> None:
        for name in ("localhost", "app.localhost", "a.b.localhost", "127.0.0.1",
                     "127.255.3.4", "[::1]", "[::ffff:127.0.0.1]"):
            self.assertTrue(is_loopback_name(name), name)

    def test_other_names(self) -> None:
        for name in ("example.com", "localhost.example.com", "notlocalhost", "128.0.0.1",
                     "10.0.0.1", "[::2]", "127.0.0.256", "0.0.0.0", "[::]"):
            self.assertFalse(is_loopback_name(name), name)

    def test_addresses(self) -> None:
        self.assertTrue(is_loopback_address(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertTrue(is_loopback_address(IPv4Address("TCP", "127.8.9.10", 1)))
        self.assertTrue(is_loopback_address(IPv6Address("TCP", "::1", 1)))
        self.assertTrue(is_loopback_address(IPv6Address("TCP", "::ffff:127.0.0.1", 1)))
        for address in (IPv4Address("TCP", "0.0.0.0", 1), IPv6Address("TCP", "::", 1),
                        IPv4Address("TCP", "192.0.2.1", 1), UNIXAddress(b"/tmp/s.sock"),
                        None, object()):
            self.assertFalse(is_loopback_address(address), address)


class PolicyTests(SynchronousTestCase):
    def test_default_checks_only_loopback_listeners(self) -> None:
        policy = HostPolicy()
        self.assertTrue(policy.checks(loopback=True))
        self.assertFalse(policy.checks(loopback=False))
        self.assertTrue(HostPolicy(["a.example"]).checks(loopback=False))
        self.assertFalse(HostPolicy(["*"]).checks(loopback=True))

    def test_default_allows_loopback_names_only(self) -> None:
        policy = HostPolicy()
        for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "x.localhost"):
            self.assertTrue(policy.allows(host), host)
        for host in ("evil.example", "evil.example:8080", "10.0.0.1", None, "", "[::1"):
            self.assertFalse(policy.allows(host), host)

    def test_exact_names_any_port(self) -> None:
        policy = HostPolicy(["Chat.Example.com", "192.0.2.7", "[2001:DB8::1]"])
        for host in ("chat.example.com", "CHAT.example.com:8443", "chat.example.com.",
                     "192.0.2.7:80", "[2001:db8::1]:8080", "localhost"):
            self.assertTrue(policy.allows(host), host)
        for host in ("a.chat.example.com", "example.com", "chat.example.co", "192.0.2.8"):
            self.assertFalse(policy.allows(host), host)

    def test_wildcards(self) -> None:
        policy = HostPolicy(["*.example.com"])
        for host in ("a.example.com", "a.b.example.com:1"):
            self.assertTrue(policy.allows(host), host)
        for host in ("example.com", "a.example.com.evil.org", "evilexample.com",
                     "a.example.community"):
            self.assertFalse(policy.allows(host), host)
        label = HostPolicy(["api.*.example.com"])
        self.assertTrue(label.allows("api.eu.example.com"))
        self.assertFalse(label.allows("api.a.b.example.com"))

    def test_star_allows_all(self) -> None:
        policy = HostPolicy(["a.example", "*"])
        for host in ("evil.example", None, "", "garbage value"):
            self.assertTrue(policy.allows(host), host)

    def test_malformed_patterns_refused(self) -> None:
        for pattern in ("a.example:80", "http://a.example", "[::1", "[nothex]", "a b", "",
                        "*.", "a..b", "a/b", "**.example.com", "::1"):
            self.assertRaises(ValueError, HostPolicy, [pattern])

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.one_of(st.none(), st.text(max_size=40)))
    def test_arbitrary_hosts_never_raise(self, host: str | None) -> None:
        for policy in (HostPolicy(), HostPolicy(["*.example.com", "[::2]", "a.test"])):
            self.assertIn(policy.allows(host), (True, False))
