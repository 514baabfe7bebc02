//! The set-up phase's egress allowlist and the one decision the egress
//! proxy makes per connection: may this host and port be reached, and is
//! the address it resolved to a public one.
//!
//! Two checks, both always: the requested name must be on the list
//! (exactly, or under a `*.` wildcard), and every address the name
//! resolves to must be public. The second holds in every mode, so a listed
//! name that resolves to the engine's host, a private network or a cloud
//! metadata address is still refused (DNS rebinding included: the proxy
//! connects to the address it checked, never resolves twice).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use crate::sandbox::environment::Refusal;

/// One allowlist entry: a host name (or `*.` wildcard for its subdomains)
/// and an optional port (any port when absent).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AllowEntry {
    /// Lower-case host name, or `*.example.org` for any name under it.
    pub host: String,
    /// The one port allowed, if the entry names one.
    pub port: Option<u16>,
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl AllowEntry {
    /// Reads `HOST`, `HOST:PORT`, `*.DOMAIN` or `*.DOMAIN:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: the port must be 1-65535"))?;
                (h, Some(port))
            }
            _ => (s, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "{s:?} is not a host name (HOST, HOST:PORT or *.DOMAIN; addresses are not allowed)"
            ));
        }
        if name.parse::<Ipv4Addr>().is_ok() || name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Err(format!(
                "{s:?} is an address; the allowlist takes host names"
            ));
        }
        Ok(AllowEntry { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => host == self.host,
        }
    }
}

/// The hosts the set-up phase may reach. Empty means no network at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// The entries, sorted, without repeats.
    pub entries: Vec<AllowEntry>,
}

impl Allowlist {
    /// A list of these entries.
    pub fn new(mut entries: Vec<AllowEntry>) -> Self {
        entries.sort();
        entries.dedup();
        Allowlist { entries }
    }

    /// Whether a request for `host:port` names an allowed host.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| e.matches(&host, port))
    }

    /// The entries as given on a command line, comma-separated.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            return "none".into();
        }
        let v: Vec<String> = self.entries.iter().map(ToString::to_string).collect();
        v.join(", ")
    }
}

/// The kind of address `ip` is when set-up may never reach it, else `None`.
/// Covers loopback, private ranges, shared (CGNAT) space, link-local (the
/// cloud metadata service among it), unspecified, multicast, broadcast,
/// reserved, unique-local and site-local IPv6,
/// and IPv4 hidden in IPv6 (mapped, compatible, NAT64, 6to4).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [127, ..] => "a loopback address",
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => "a private address",
        [169, 254, 169, 254] => "the cloud metadata address",
        [169, 254, ..] => "a link-local address",
        [100, 64..=127, ..] => "a shared (carrier-grade NAT) address",
        [0, ..] => "an unspecified address",
        [224..=239, ..] => "a multicast address",
        [255, 255, 255, 255] => "the broadcast address",
        [240..=255, ..] => "a reserved address",
        [192, 0, 0, ..] => "an IETF protocol address",
        // Documentation and benchmarking ranges are not refused: no
        // inside service lives there, and intercepting proxies and
        // fake-IP resolvers answer registry names with them.
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).or(Some("an IPv4-mapped address"));
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return forbidden_v4(v4).or(Some("a NAT64 address"));
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return forbidden_v4(v4).or(Some("a 6to4 address"));
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("an IPv4-compatible address");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "a unique-local address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xffc0 == 0xfec0 => "a site-local address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard address",
        _ => return None,
    })
}

/// The decision for a request of `host:port` whose name resolved to
/// `addrs`: the address to connect to, or why not. Every address must be
/// public (a name with one private address among public ones is refused:
/// it is either misconfigured or aiming at the inside).
pub fn decide(
    list: &Allowlist,
    host: &str,
    port: u16,
    addrs: &[IpAddr],
) -> Result<IpAddr, Refusal> {
    if !list.allows(host, port) {
        return Err(Refusal::NotListed);
    }
    for &a in addrs {
        if let Some(kind) = forbidden(a) {
            return Err(Refusal::Address {
                addr: a.to_string(),
                kind: kind.into(),
            });
        }
    }
    addrs.first().copied().ok_or(Refusal::NoAddress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::new(
            entries
                .iter()
                .map(|e| AllowEntry::parse(e).unwrap())
                .collect(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_names_ports_and_wildcards_and_refuse_addresses() {
        assert_eq!(
            AllowEntry::parse("Pkg.Example.ORG:443").unwrap(),
            AllowEntry {
                host: "pkg.example.org".into(),
                port: Some(443)
            }
        );
        assert_eq!(AllowEntry::parse("*.example.org").unwrap().port, None);
        for bad in [
            "", "10.0.0.1", "a..b", "x:0", "x:99999", "[::1]:80", "a b", "*.",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_match_exactly_or_under_a_wildcard_and_on_the_port() {
        let l = list(&["pkg.example.org", "*.files.example.org", "mirror.test:8080"]);
        assert!(l.allows("pkg.example.org", 443));
        assert!(l.allows("PKG.example.org.", 80));
        assert!(!l.allows("evil-pkg.example.org", 443));
        assert!(!l.allows("example.org", 443));
        assert!(l.allows("a.files.example.org", 443));
        assert!(!l.allows("files.example.org", 443));
        assert!(!l.allows("afiles.example.org", 443));
        assert!(l.allows("mirror.test", 8080));
        assert!(!l.allows("mirror.test", 443));
        assert!(!Allowlist::default().allows("pkg.example.org", 443));
    }

    #[test]
    fn off_list_names_are_refused_before_any_address_is_looked_at() {
        let l = list(&["pkg.example.org"]);
        assert_eq!(
            decide(&l, "off.invalid", 443, &[ip("93.184.215.14")]),
            Err(Refusal::NotListed)
        );
        assert_eq!(
            decide(&l, "pkg.example.org", 443, &[ip("93.184.215.14")]),
            Ok(ip("93.184.215.14"))
        );
        assert_eq!(
            decide(&l, "pkg.example.org", 443, &[]),
            Err(Refusal::NoAddress)
        );
    }

    #[test]
    fn a_listed_name_that_resolves_inside_is_refused_in_every_form() {
        let l = list(&["pkg.example.org"]);
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.17.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("100.100.100.200", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("2002:a00:1::", "private"),
            ("fd00:ec2::254", "unique-local"),
            ("fe80::1", "link-local"),
            ("::7f00:1", "compatible"),
        ] {
            let got = decide(&l, "pkg.example.org", 443, &[ip("93.184.215.14"), ip(addr)]);
            match got {
                Err(Refusal::Address { kind: k, .. }) => assert!(k.contains(kind), "{addr}: {k}"),
                other => panic!("{addr}: {other:?}"),
            }
        }
        assert_eq!(forbidden(ip("2606:4700::1111")), None);
        assert_eq!(forbidden(ip("93.184.215.14")), None);
        // What intercepting proxies answer registry names with here.
        assert_eq!(forbidden(ip("203.0.113.80")), None);
    }
}
