"""Unit tests for wsservice.origin.OriginPolicy (protocol.md section 1, "Origin").

Default policy: allow a missing Origin and an Origin whose host and port (the scheme's default
port when absent) equal those of the Host header; --allowed-origin patterns
(``https://*.example.com``) extend it; ``*`` allows all.  A Host header without a port takes
the default port of the Origin's scheme (so a page behind a TLS-terminating proxy works).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsservice.origin import OriginPolicy


class _OriginCase(SynchronousTestCase):
    def assertAllowed(self, policy, origin, host):
        self.assertIs(policy.allows(origin, host), True,
                      f"expected {origin!r} allowed (Host {host!r})")

    def assertRefused(self, policy, origin, host):
        self.assertIs(policy.allows(origin, host), False,
                      f"expected {origin!r} refused (Host {host!r})")


class DefaultPolicyTests(_OriginCase):
    def setUp(self):
        self.policy = OriginPolicy()

    def test_missing_origin_allowed(self):
        self.assertAllowed(self.policy, None, "example.com")
        self.assertAllowed(self.policy, None, "example.com")
        self.assertAllowed(self.policy, None, None)

    def test_portless_host_takes_the_origins_default_port(self):
        self.assertIs(self.policy.allows("http://example.com", "example.com"), True)
        self.assertIs(self.policy.allows("https://example.com", "example.com"), True)

    def test_same_host_explicit_ports(self):
        self.assertAllowed(self.policy, "http://example.com:8080", "example.com:8080")
        self.assertAllowed(self.policy, "https://example.com:8443", "example.com:8443")
        self.assertAllowed(self.policy, "https://example.com:8443", "example.com:8443")
        self.assertAllowed(self.policy, "http://example.com:8080", "example.com:8080")

    def test_same_host_default_ports_http(self):
        self.assertAllowed(self.policy, "http://example.com", "example.com")
        self.assertAllowed(self.policy, "http://example.com:80", "example.com")
        self.assertAllowed(self.policy, "http://example.com", "example.com:80")
        self.assertAllowed(self.policy, "http://example.com:80", "example.com:80")

    def test_same_host_default_ports_https(self):
        self.assertAllowed(self.policy, "https://example.com", "example.com")
        self.assertAllowed(self.policy, "https://example.com:443", "example.com")
        self.assertAllowed(self.policy, "https://example.com", "example.com:443")
        self.assertAllowed(self.policy, "https://example.com", "example.com:443")

    def test_ws_schemes(self):
        self.assertAllowed(self.policy, "ws://example.com", "example.com")
        self.assertAllowed(self.policy, "wss://example.com", "example.com")

    def test_portless_host_behind_a_tls_proxy(self):
        # the listener is plain (the proxy ends TLS); the page is https on 443
        self.assertAllowed(self.policy, "https://example.com", "example.com")
        self.assertAllowed(self.policy, "http://example.com", "example.com")
        # an Origin on another port than its scheme's default is not the Host's
        self.assertRefused(self.policy, "http://example.com:443", "example.com")
        self.assertRefused(self.policy, "https://example.com:80", "example.com")

    def test_different_host_refused(self):
        self.assertRefused(self.policy, "http://evil.org", "example.com")
        self.assertRefused(self.policy, "http://a.example.com", "example.com")
        self.assertRefused(self.policy, "http://example.com", "a.example.com")
        self.assertRefused(self.policy, "http://example.com.evil.org", "example.com")
        self.assertRefused(self.policy, "http://example.co", "example.com")
        self.assertRefused(self.policy, "https://evil.org", "example.com")

    def test_different_port_refused(self):
        self.assertRefused(self.policy, "http://example.com:8080", "example.com")
        self.assertRefused(self.policy, "http://example.com", "example.com:8080")
        self.assertRefused(self.policy, "http://example.com:8081", "example.com:8080")
        self.assertRefused(self.policy, "https://example.com", "example.com:80")
        self.assertRefused(self.policy, "http://example.com:443", "example.com")

    def test_null_origin_refused(self):
        for origin in ("null", "NULL", "Null", " null "):
            self.assertRefused(self.policy, origin, "example.com")
            self.assertRefused(self.policy, origin, "null")

    def test_missing_host_with_origin_refused(self):
        self.assertRefused(self.policy, "http://example.com", None)
        self.assertRefused(self.policy, "http://example.com", "")

    def test_ipv6_hosts(self):
        self.assertAllowed(self.policy, "http://[::1]:8080", "[::1]:8080")
        self.assertAllowed(self.policy, "http://[::1]", "[::1]")
        self.assertAllowed(self.policy, "http://[::1]:80", "[::1]")
        self.assertAllowed(self.policy, "https://[::1]", "[::1]")
        self.assertAllowed(self.policy, "https://[2001:db8::1]:8443", "[2001:db8::1]:8443")
        self.assertAllowed(self.policy, "http://[2001:DB8::A]", "[2001:db8::a]")
        self.assertRefused(self.policy, "http://[::1]:8080", "[::1]:8081")
        self.assertRefused(self.policy, "http://[::1]:8080", "[::2]:8080")
        self.assertRefused(self.policy, "http://[::1]", "localhost")

    def test_ipv4_hosts(self):
        self.assertAllowed(self.policy, "http://127.0.0.1:8080", "127.0.0.1:8080")
        self.assertRefused(self.policy, "http://127.0.0.1:8080", "localhost:8080")
        self.assertRefused(self.policy, "http://127.0.0.2:8080", "127.0.0.1:8080")

    def test_case_insensitive(self):
        self.assertAllowed(self.policy, "HTTP://EXAMPLE.COM", "example.com")
        self.assertAllowed(self.policy, "http://example.com", "EXAMPLE.COM")
        self.assertAllowed(self.policy, "Https://Example.Com:8443", "eXample.cOm:8443")

    def test_surrounding_whitespace_and_trailing_slash(self):
        self.assertAllowed(self.policy, " http://example.com ", " example.com ")
        self.assertAllowed(self.policy, "http://example.com/", "example.com")

    def test_unsupported_schemes_refused(self):
        for origin in ("ftp://example.com", "file://example.com", "chrome-extension://abc",
                       "data:text/html,x", "javascript:alert(1)", "//example.com",
                       "example.com", "file:///etc/passwd"):
            self.assertRefused(self.policy, origin, "example.com")

    def test_garbage_origins_refused_without_raising(self):
        for origin in ("", " ", "http://", "https://", "http://:80", "http://[::1",
                       "http://[::1]]", "http://[not-ipv6]", "http://example.com:99999",
                       "http://example.com:-1", "http://example.com:abc",
                       "http://example.com:8o", "http://exa mple.com", "\x00", "\x00http://x",
                       "http://\udcff", "http://ex\u00e4mple.com", ":::", "*", "http:///",
                       "http://" + "a" * 10000, "%", "http://%zz"):
            self.assertRefused(self.policy, origin, "example.com")

    def test_garbage_host_refused_without_raising(self):
        for host in ("", " ", "[::1", "example.com:abc", "example.com:99999", ":80", "[]",
                     "a b", "\x00", "example.com:8080:1", "\udcff"):
            self.assertRefused(self.policy, "http://example.com", host)

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.one_of(st.none(), st.text(max_size=40),
                     st.builds(lambda s, h: s + h, st.sampled_from(
                         ["http://", "https://", "ws://", "wss://", "null", "http://["]),
                         st.text(max_size=30))),
           st.one_of(st.none(), st.text(max_size=30)), st.booleans())
    def test_arbitrary_input_never_raises(self, origin, host, secure):
        for policy in (self.policy, OriginPolicy(["https://*.example.com", "http://x:1"])):
            self.assertIn(policy.allows(origin, host), (True, False))


class PatternTests(_OriginCase):
    def test_wildcard_subdomain(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertAllowed(policy, "https://a.example.com", "other.host")
        self.assertAllowed(policy, "https://www.example.com", "other.host")
        self.assertAllowed(policy, "HTTPS://A.EXAMPLE.COM", "other.host")

    def test_wildcard_requires_scheme(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertRefused(policy, "http://a.example.com", "other.host")
        self.assertRefused(policy, "wss://a.example.com", "other.host")

    def test_wildcard_not_a_suffix_trick(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertRefused(policy, "https://example.com.evil.org", "other.host")
        self.assertRefused(policy, "https://a.example.com.evil.org", "other.host")
        self.assertRefused(policy, "https://evilexample.com", "other.host")
        self.assertRefused(policy, "https://a.example.community", "other.host")

    def test_wildcard_does_not_match_bare_domain(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertRefused(policy, "https://example.com", "other.host")

    def test_wildcard_matches_only_host_labels(self):
        """'*' stands for sub-domain labels; it must not swallow '/', '#', '?', ':' or '@'.

        None of these is the Origin of a sub-domain of example.com.
        """
        policy = OriginPolicy(["https://*.example.com"])
        for origin in ("https://evil.org/x.example.com", "https://evil.org/.example.com",
                       "https://evil.org#.example.com", "https://evil.org?.example.com",
                       "https://evil.org:1.example.com"):
            self.assertRefused(policy, origin, "other.host")

    def test_wildcard_needs_a_non_empty_label(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertRefused(policy, "https://.example.com", "other.host")

    def test_wildcard_with_port(self):
        policy = OriginPolicy(["http://*.example.com:8080"])
        self.assertAllowed(policy, "http://a.example.com:8080", "other.host")
        self.assertRefused(policy, "http://a.example.com:8081", "other.host")
        self.assertRefused(policy, "http://a.example.com", "other.host")

    def test_exact_pattern(self):
        policy = OriginPolicy(["https://app.example.com"])
        self.assertAllowed(policy, "https://app.example.com", "api.example.com")
        self.assertAllowed(policy, "https://app.example.com/", "api.example.com")
        self.assertRefused(policy, "https://app2.example.com", "api.example.com")
        self.assertRefused(policy, "http://app.example.com", "api.example.com")

    def test_pattern_case_and_trailing_slash_normalised(self):
        policy = OriginPolicy(["HTTPS://*.Example.COM/"])
        self.assertAllowed(policy, "https://a.example.com", "other.host")
        self.assertAllowed(policy, "https://A.EXAMPLE.COM", "other.host")

    def test_patterns_extend_same_host(self):
        policy = OriginPolicy(["https://*.example.com"])
        self.assertAllowed(policy, "http://other.host:8080", "other.host:8080")
        self.assertAllowed(policy, None, "other.host")
        self.assertRefused(policy, "http://evil.org", "other.host")
        self.assertRefused(policy, "null", "other.host")

    def test_several_patterns(self):
        policy = OriginPolicy(["https://a.test", "https://*.b.test"])
        self.assertAllowed(policy, "https://a.test", "h")
        self.assertAllowed(policy, "https://x.b.test", "h")
        self.assertRefused(policy, "https://c.test", "h")

    def test_ipv6_literal_pattern(self):
        """An allowed-origin pattern naming an IPv6 origin allows exactly that origin."""
        policy = OriginPolicy(["http://[::1]:8080"])
        self.assertAllowed(policy, "http://[::1]:8080", "other.host")
        self.assertRefused(policy, "http://1:8080", "other.host")
        self.assertRefused(policy, "http://::8080", "other.host")

    def test_star_allows_all(self):
        policy = OriginPolicy(["*"])
        for origin in (None, "null", "http://evil.org", "https://a.example.com",
                       "garbage", "", "http://[::1"):
            self.assertAllowed(policy, origin, "example.com")
            self.assertAllowed(policy, origin, None)

    def test_null_pattern_allows_only_null(self):
        policy = OriginPolicy(["null", "https://*.example.com"])
        for origin in ("null", "NULL", " null "):
            self.assertAllowed(policy, origin, "example.com")
        self.assertAllowed(policy, "https://a.example.com", "h")
        self.assertRefused(policy, "http://evil.org", "h")
        self.assertRefused(policy, "file:///etc/passwd", "h")
        self.assertTrue(policy.allow_null)
        self.assertFalse(OriginPolicy().allow_null)

    def test_star_among_other_patterns(self):
        policy = OriginPolicy(["https://*.example.com", "*"])
        self.assertAllowed(policy, "http://evil.org", "example.com")

    def test_patterns_are_kept_normalised(self):
        policy = OriginPolicy(["HTTPS://A.Example.com/"])
        self.assertEqual(policy.patterns, ("https://a.example.com",))
        self.assertFalse(policy.allow_all)
        self.assertTrue(OriginPolicy(["*"]).allow_all)

    def test_patterns_any_iterable(self):
        policy = OriginPolicy(p for p in ["https://*.example.com"])
        self.assertAllowed(policy, "https://a.example.com", "h")
        self.assertAllowed(OriginPolicy(("*",)), "http://x", "h")

    def test_garbage_origins_refused_with_patterns(self):
        policy = OriginPolicy(["https://*.example.com"])
        for origin in ("", "null", "https://", "https://*.example.com.", "http://[::1",
                       "https://a.example.com:99999x", "\x00"):
            self.assertRefused(policy, origin, "other.host")
