//! Which addresses a script may reach: every public unicast address, and a
//! non-public one only when its host is in `[script.http] allow`.
//!
//! std's `IpAddr::is_global` is still unstable and no small, kept crate has
//! the table, so it is written out here from the IANA special-purpose
//! registries (IPv4 and IPv6), with the IPv6 forms that carry an IPv4
//! address inside (v4-mapped, NAT64, 6to4) judged by that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public; the word a refusal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    Unspecified,
    Loopback,
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    LinkLocal,
    /// fc00::/7, the IPv6 private range.
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// Protocol assignments, future use, deprecated and tunnel ranges.
    Reserved,
}

impl Restricted {
    pub fn as_str(self) -> &'static str {
        match self {
            Restricted::Unspecified => "unspecified",
            Restricted::Loopback => "loopback",
            Restricted::Private => "private",
            Restricted::SharedAddressSpace => "shared (carrier-grade NAT)",
            Restricted::LinkLocal => "link-local",
            Restricted::UniqueLocal => "unique local (private)",
            Restricted::Multicast => "multicast",
            Restricted::Broadcast => "broadcast",
            Restricted::Documentation => "documentation",
            Restricted::Benchmarking => "benchmarking",
            Restricted::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for Restricted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `None` for a public unicast address, else why it is not one.
pub fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, c, _] = ip.octets();
    let r = match (a, b, c) {
        _ if ip.is_broadcast() => Restricted::Broadcast,
        (0, _, _) => Restricted::Unspecified,
        (10, _, _) => Restricted::Private,
        (100, 64..=127, _) => Restricted::SharedAddressSpace,
        (127, _, _) => Restricted::Loopback,
        (169, 254, _) => Restricted::LinkLocal,
        (172, 16..=31, _) => Restricted::Private,
        (192, 0, 0) => Restricted::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Restricted::Documentation,
        (192, 88, 99) => Restricted::Reserved,
        (192, 168, _) => Restricted::Private,
        (198, 18..=19, _) => Restricted::Benchmarking,
        (224..=239, _, _) => Restricted::Multicast,
        (240..=255, _, _) => Restricted::Reserved,
        _ => return None,
    };
    Some(r)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Restricted> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Restricted::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Restricted::Loopback);
    }
    // ::ffff:a.b.c.d reaches a.b.c.d: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // 64:ff9b::/96, NAT64: a gateway forwards to the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    // 2002::/16, 6to4: the relay forwards to the embedded IPv4 address.
    if s[0] == 0x2002 {
        return classify_v4(embedded_v4(s[1], s[2]));
    }
    let r = match s[0] {
        // ::/96 (IPv4-compatible, deprecated) and the rest of ::/8.
        0x0000..=0x00ff => Restricted::Reserved,
        // 64:ff9b:1::/48 local-use NAT64, 100::/64 discard and the like.
        0x0100..=0x1fff => Restricted::Reserved,
        // 2001:db8::/32 and 3fff::/20.
        0x2001 if s[1] == 0x0db8 => Restricted::Documentation,
        0x3fff if s[1] <= 0x0fff => Restricted::Documentation,
        // 2001:2::/48 benchmarking.
        0x2001 if s[1] == 0x0002 && s[2] == 0 => Restricted::Benchmarking,
        // 2001::/23: Teredo (2001::/32), ORCHID and other protocol assignments.
        0x2001 if s[1] <= 0x01ff => Restricted::Reserved,
        // 5f00::/16, SRv6 segment identifiers.
        0x5f00 => Restricted::Reserved,
        // Global unicast is 2000::/3; everything else up to fc00:: is unassigned.
        0x2000..=0x3fff => return None,
        0xfc00..=0xfdff => Restricted::UniqueLocal,
        0xfe80..=0xfebf => Restricted::LinkLocal,
        // fec0::/10, site-local (deprecated), was IPv6's private range.
        0xfec0..=0xfeff => Restricted::Private,
        0xff00..=0xffff => Restricted::Multicast,
        _ => Restricted::Reserved,
    };
    Some(r)
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// `[script.http] allow`: exact host names, IP addresses, and `*.suffix`
/// patterns (which match names under the suffix, not the suffix itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    /// With the leading dot: ".lan".
    suffixes: Vec<String>,
    ips: Vec<IpAddr>,
}

/// An `allow` entry that is none of the accepted shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allow entry {entry:?} {why}")]
pub struct AllowEntryError {
    pub entry: String,
    pub why: &'static str,
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, AllowEntryError> {
        let mut list = AllowList::default();
        for entry in entries {
            list.add(entry.as_ref())?;
        }
        Ok(list)
    }

    /// Adds one entry; the error names it and says what is wrong.
    pub fn add(&mut self, entry: &str) -> Result<(), AllowEntryError> {
        let fail = |why| AllowEntryError {
            entry: entry.to_string(),
            why,
        };
        let e = entry.trim();
        if e.is_empty() {
            return Err(fail("is empty"));
        }
        let unbracketed = e
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(e);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            self.ips.push(ip.to_canonical());
            return Ok(());
        }
        if e.contains("://") || e.contains('/') {
            return Err(fail(
                "must be a host name, an IP address or *.suffix, not a URL or a network",
            ));
        }
        if e.contains(':') {
            return Err(fail("must not carry a port"));
        }
        let (suffix, name) = match e.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, e),
        };
        let name = normalize_host(name);
        if !valid_host_name(&name) {
            return Err(fail(
                "must be a host name (letters, digits, '-', '_', '.'), an IP address or *.suffix",
            ));
        }
        if suffix {
            self.suffixes.push(format!(".{name}"));
        } else {
            self.hosts.push(name);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.suffixes.is_empty() && self.ips.is_empty()
    }

    /// Whether a host name (as in a URL) is listed, exactly or by suffix.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        if let Ok(ip) = host
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(&host)
            .parse::<IpAddr>()
        {
            return self.allows_ip(ip);
        }
        self.hosts.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s))
    }

    /// Whether an address is listed (a v4-mapped IPv6 address counts as
    /// its IPv4 one).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ips.contains(&ip)
    }
}

/// Lowercase, without the root's trailing dot: `Example.COM.` is
/// `example.com`.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<Restricted> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.1.1",
            "198.17.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn non_public_addresses_are_named() {
        use Restricted::*;
        for (ip, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.10", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.88.99.1", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Broadcast),
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.1.2.3", Private),
            ("::127.0.0.1", Reserved),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b:1::1", Reserved),
            ("100::1", Reserved),
            ("2002:7f00:1::", Loopback),
            ("2002:c0a8:101::1", Private),
            ("2001::1", Reserved),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved),
            ("2001:2::1", Benchmarking),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("5f00::1", Reserved),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("4000::1", Reserved),
            ("e000::1", Reserved),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn allow_list_matches_hosts_suffixes_and_ips() {
        let a = AllowList::parse(&["Home.Example.", "*.lan", "192.168.1.10", "[fd00::5]", "::1"])
            .unwrap();
        assert!(a.allows_host("home.example"));
        assert!(a.allows_host("HOME.example."));
        assert!(!a.allows_host("x.home.example"));
        assert!(a.allows_host("printer.lan"));
        assert!(a.allows_host("a.b.lan"));
        assert!(!a.allows_host("lan"));
        assert!(!a.allows_host("evil-lan"));
        assert!(!a.allows_host("printer.lan.evil.com"));
        assert!(a.allows_host("192.168.1.10"));
        assert!(!a.allows_host("192.168.1.11"));
        assert!(a.allows_host("[fd00::5]"));
        assert!(a.allows_ip("192.168.1.10".parse().unwrap()));
        assert!(a.allows_ip("::ffff:192.168.1.10".parse().unwrap()));
        assert!(a.allows_ip("::1".parse().unwrap()));
        assert!(!a.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(AllowList::default().is_empty());
    }

    #[test]
    fn bad_allow_entries_say_why() {
        for (entry, why) in [
            ("", "is empty"),
            ("http://x.lan", "not a URL"),
            ("x.lan/path", "not a URL"),
            ("x.lan:8080", "port"),
            ("*", "must be a host name"),
            ("*lan", "must be a host name"),
            ("a.*.lan", "must be a host name"),
            ("a..b", "must be a host name"),
            ("a b", "must be a host name"),
            ("10.0.0.0/8", "not a URL"),
        ] {
            let e = AllowList::parse(&[entry]).unwrap_err();
            assert!(e.to_string().contains(why), "{entry}: {e}");
            assert!(e.to_string().contains(&format!("{entry:?}")), "{e}");
        }
    }
}
