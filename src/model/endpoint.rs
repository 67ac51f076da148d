//! Where a device's own push URL (a Web Push endpoint, a WNS channel URI) may lead: host
//! allowlists (`*.suffix` or exact hosts) and the rule that an endpoint's address be public
//! ([`EndpointPolicy`], server audit M1: a public Listen key must not make the engine post to
//! loopback, cloud metadata or the private network). Sans-IO: the registry checks a host when
//! an installation is written, the dispatcher when it picks a pool, and the transport checks
//! every address a host resolves to before it connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `host` (lower-case) matches one of `patterns` (lower-case): `*.suffix` takes any
/// host under the suffix, not the suffix itself; anything else is an exact host.
pub(crate) fn host_matches(patterns: &[String], host: &str) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => p == host,
    })
}

/// The special-purpose range `ip` is in, named with its source, or `None` for a public
/// (globally routable unicast) address. IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002::/16`, RFC 3056) addresses are judged by the
/// IPv4 address they carry. Ranges: the IANA IPv4 and IPv6 Special-Purpose Address Registries
/// (RFC 6890), plus multicast and the reserved space; IPv6 outside `2000::/3` (RFC 4291 §2.4,
/// global unicast) is refused whatever it is.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8, RFC 791)",
        (10, _, _) => "private (10.0.0.0/8, RFC 1918)",
        (100, 64..=127, _) => "shared address space, carrier-grade NAT (100.64.0.0/10, RFC 6598)",
        (127, _, _) => "loopback (127.0.0.0/8, RFC 1122)",
        (169, 254, _) => "link-local, cloud metadata (169.254.0.0/16, RFC 3927)",
        (172, 16..=31, _) => "private (172.16.0.0/12, RFC 1918)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24, RFC 6890)",
        (192, 0, 2) => "documentation (192.0.2.0/24, RFC 5737)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24, RFC 7526)",
        (192, 168, _) => "private (192.168.0.0/16, RFC 1918)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15, RFC 2544)",
        (198, 51, 100) => "documentation (198.51.100.0/24, RFC 5737)",
        (203, 0, 113) => "documentation (203.0.113.0/24, RFC 5737)",
        (224..=239, _, _) => "multicast (224.0.0.0/4, RFC 5771)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4, RFC 1112)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some("unspecified (::/128, RFC 4291)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1/128, RFC 4291)");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4)
            .map(|_| "IPv4-mapped, of a non-public IPv4 address (::ffff:0:0/96)");
    }
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible, deprecated (::/96, RFC 4291 §2.5.5.1)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(embedded(s[6], s[7]))
            .map(|_| "NAT64, of a non-public IPv4 address (64:ff9b::/96, RFC 6052)");
    }
    if s[0] == 0x2002 {
        return non_public_v4(embedded(s[1], s[2]))
            .map(|_| "6to4, of a non-public IPv4 address (2002::/16, RFC 3056)");
    }
    Some(match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 1 => "local-use NAT64 (64:ff9b:1::/48, RFC 8215)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64, RFC 6666)",
        0x2001 if s[1] == 0 => "Teredo (2001::/32, RFC 4380)",
        0x2001 if s[1] == 2 && s[2] == 0 => "benchmarking (2001:2::/48, RFC 5180)",
        0x2001 if s[1] == 0xdb8 => "documentation (2001:db8::/32, RFC 3849)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20, RFC 9637)",
        0xfc00..=0xfdff => "unique local (fc00::/7, RFC 4193)",
        0xfe80..=0xfebf => "link-local (fe80::/10, RFC 4291)",
        0xfec0..=0xfeff => "site-local, deprecated (fec0::/10, RFC 3879)",
        0xff00..=0xffff => "multicast (ff00::/8, RFC 4291)",
        0x2000..=0x3fff => return None,
        _ => "reserved, not global unicast (outside 2000::/3, RFC 4291 §2.4)",
    })
}

/// Where devices' own push URLs may lead: hosts on an allowlist (when one is set), and only
/// public addresses unless private ones are allowed (tests against local mocks, embedders on
/// a private network).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndpointPolicy {
    /// Exact hosts or `*.suffix` patterns, lower-case; empty: any host.
    hosts: Vec<String>,
    /// Loopback, private, link-local and the other non-public addresses allowed.
    private: bool,
}

impl EndpointPolicy {
    /// A policy with `hosts` (empty: any host) and, when `private`, non-public addresses.
    pub(crate) fn new<S: AsRef<str>>(hosts: &[S], private: bool) -> Self {
        EndpointPolicy {
            hosts: hosts
                .iter()
                .map(|h| h.as_ref().to_ascii_lowercase())
                .collect(),
            private,
        }
    }

    /// Whether non-public addresses are allowed (no address check is made).
    pub(crate) fn allows_private(&self) -> bool {
        self.private
    }

    /// Whether devices at `host` (a name or an IP literal without brackets) may be sent to;
    /// `Err` says why not. A name's addresses are checked when it is resolved
    /// ([`Self::check_address`]).
    pub(crate) fn check_host(&self, host: &str) -> Result<(), String> {
        let host = host.to_ascii_lowercase();
        if !self.hosts.is_empty() && !host_matches(&self.hosts, &host) {
            return Err(format!(
                "host {host} is not on the allowlist ({})",
                self.hosts.join(", ")
            ));
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => self.check_address(&host, ip),
            Err(_) => Ok(()),
        }
    }

    /// Whether `host` may be reached at `ip`, one of its addresses; `Err` says why not.
    pub(crate) fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.private {
            Ok(())
        } else {
            require_public(host, ip)
        }
    }
}

/// `Ok` when `ip`, an address of `host` (a name, or `ip` itself), is public; otherwise why not.
pub(crate) fn require_public(host: &str, ip: IpAddr) -> Result<(), String> {
    match non_public(ip) {
        None => Ok(()),
        Some(range) if host == ip.to_string() => {
            Err(format!("address {ip} is {range}, not a public address"))
        }
        Some(range) => Err(format!(
            "host {host} resolves to {ip}, {range}, not a public address"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address per range, and public neighbours just outside them.
    #[test]
    fn classifies_every_special_range() {
        let refused = [
            ("0.0.0.0", "0.0.0.0/8"),
            ("0.1.2.3", "0.0.0.0/8"),
            ("10.0.0.1", "10.0.0.0/8"),
            ("10.255.255.255", "10.0.0.0/8"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.127.255.254", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.255.0.9", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.1", "192.0.2.0/24"),
            ("192.88.99.1", "192.88.99.0/24"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("198.18.0.1", "198.18.0.0/15"),
            ("198.19.255.1", "198.18.0.0/15"),
            ("198.51.100.7", "198.51.100.0/24"),
            ("203.0.113.9", "203.0.113.0/24"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("239.255.255.250", "224.0.0.0/4"),
            ("240.0.0.1", "240.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::ffff:127.0.0.1", "::ffff:0:0/96"),
            ("::ffff:169.254.169.254", "::ffff:0:0/96"),
            ("::ffff:10.1.2.3", "::ffff:0:0/96"),
            ("::ffff:192.168.0.1", "::ffff:0:0/96"),
            ("::127.0.0.1", "::/96"),
            ("::8.8.8.8", "::/96"),
            ("64:ff9b::7f00:1", "64:ff9b::/96"),
            ("64:ff9b::a9fe:a9fe", "64:ff9b::/96"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            ("100::1", "100::/64"),
            ("2001::1", "2001::/32"),
            ("2001:2::1", "2001:2::/48"),
            ("2001:db8::1", "2001:db8::/32"),
            ("2002:7f00:1::1", "2002::/16"),
            ("2002:a00:1::1", "2002::/16"),
            ("3fff::1", "3fff::/20"),
            ("fc00::1", "fc00::/7"),
            ("fd12:3456::1", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("febf::1", "fe80::/10"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
            ("4000::1", "2000::/3"),
            ("1::1", "2000::/3"),
        ];
        for (ip, range) in refused {
            let why = non_public(ip.parse().unwrap());
            assert!(
                why.is_some_and(|w| w.contains(range)),
                "{ip}: {why:?}, expected {range}"
            );
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.1.1",
            "169.255.0.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "142.250.74.106",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200a",
            "2001:db9::1",
            "3fff:1000::1",
        ];
        for ip in public {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn host_patterns_take_subdomains_of_a_wildcard_and_exact_hosts() {
        let p = vec!["*.notify.windows.com".to_string(), "localhost".to_string()];
        assert!(host_matches(&p, "db5.notify.windows.com"));
        assert!(host_matches(&p, "a.b.notify.windows.com"));
        assert!(host_matches(&p, "localhost"));
        assert!(!host_matches(&p, "notify.windows.com"));
        assert!(!host_matches(&p, "evilnotify.windows.com"));
        assert!(!host_matches(&p, "db5.notify.windows.com.evil"));
        assert!(!host_matches(&p, "localhost2"));
    }

    #[test]
    fn policy_checks_the_allowlist_then_literal_addresses() {
        let open = EndpointPolicy::default();
        assert!(open.check_host("fcm.googleapis.com").is_ok());
        assert!(open.check_host("8.8.8.8").is_ok());
        assert!(open.check_host("2606:4700::1").is_ok());
        assert_eq!(
            open.check_host("169.254.169.254").unwrap_err(),
            "address 169.254.169.254 is link-local, cloud metadata (169.254.0.0/16, RFC 3927), \
             not a public address"
        );
        assert!(open.check_host("::ffff:127.0.0.1").is_err());
        assert!(open.check_host("fd00::1").is_err());
        // A name passes here: its addresses are checked when it is resolved.
        assert!(open.check_host("localhost").is_ok());
        assert_eq!(
            open.check_address("localhost", "127.0.0.1".parse().unwrap())
                .unwrap_err(),
            "host localhost resolves to 127.0.0.1, loopback (127.0.0.0/8, RFC 1122), \
             not a public address"
        );

        let listed = EndpointPolicy::new(
            &["*.Push.Services.Mozilla.com", "fcm.googleapis.com"],
            false,
        );
        assert!(listed
            .check_host("updates.push.services.mozilla.com")
            .is_ok());
        assert!(listed.check_host("FCM.googleapis.com").is_ok());
        assert_eq!(
            listed.check_host("evil.example").unwrap_err(),
            "host evil.example is not on the allowlist \
             (*.push.services.mozilla.com, fcm.googleapis.com)"
        );

        let private = EndpointPolicy::new(&[] as &[&str], true);
        assert!(private.allows_private());
        assert!(private.check_host("127.0.0.1").is_ok());
        assert!(private
            .check_address("localhost", "::1".parse().unwrap())
            .is_ok());
        // The allowlist still applies with private addresses allowed.
        let mock = EndpointPolicy::new(&["127.0.0.1"], true);
        assert!(mock.check_host("127.0.0.1").is_ok());
        assert!(mock.check_host("10.0.0.1").is_err());
    }
}
