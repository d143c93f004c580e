//! SSRF guard: which destinations a webhook may reach.
//!
//! Two checks, both applied on every attempt (not only when an endpoint is created):
//! - [`Policy::check_url`] before the request: scheme (`https`, or `http` when allowed), a
//!   host, and IP literals in any notation (the `url` crate normalises `0x7f.1`,
//!   `2130706433`, `0177.0.0.1`… into [`url::Host::Ipv4`]). Literals must be checked here
//!   because hyper connects to them without calling the resolver.
//! - [`GuardedResolver`], the client's DNS resolver: it resolves names and drops every
//!   internal address, so the check happens at connection time on the addresses actually
//!   dialled (defeating DNS rebinding and names such as `localhost`).
//!
//! An operator allowlist ([`Policy::allow`]) re-admits internal networks on purpose.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// IPv4 ranges that are not public unicast destinations: `(network, prefix length, name)`.
/// Single addresses come first so that they get their more specific name.
const V4_RANGES: &[([u8; 4], u8, &str)] = &[
    ([169, 254, 169, 254], 32, "cloud-metadata"),
    ([100, 100, 100, 200], 32, "cloud-metadata"),
    // Azure's WireServer: a public-looking address only meaningful inside Azure.
    ([168, 63, 129, 16], 32, "cloud-metadata"),
    ([0, 0, 0, 0], 32, "unspecified"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "this-network"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "cgnat"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "ietf-protocol-assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4-relay-anycast"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// How an IPv6 range is judged.
enum V6Rule {
    /// Internal, with this name.
    Internal(&'static str),
    /// Judge the IPv4 address embedded in the low 32 bits.
    EmbeddedLow32,
    /// 6to4: judge the IPv4 address in bits 16..48.
    Embedded6to4,
}

/// IPv6 ranges, most specific first: `(network, prefix length, rule)`.
const V6_RANGES: &[(u128, u8, V6Rule)] = &[
    (0, 128, V6Rule::Internal("unspecified")),
    (1, 128, V6Rule::Internal("loopback")),
    // fd00:ec2::254, AWS's IPv6 instance metadata service.
    (
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
        128,
        V6Rule::Internal("cloud-metadata"),
    ),
    // ::ffff:a.b.c.d, IPv4-mapped: the socket reaches a.b.c.d.
    (0xffff_0000_0000, 96, V6Rule::EmbeddedLow32),
    // ::a.b.c.d, IPv4-compatible (deprecated): internal whatever it embeds.
    (0, 96, V6Rule::Internal("ipv4-compatible")),
    // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
    (
        0xffff_0000_0000_0000,
        96,
        V6Rule::Internal("ipv4-translated"),
    ),
    // 64:ff9b::a.b.c.d, well-known NAT64 prefix: the gateway reaches a.b.c.d.
    (
        0x0064_ff9b_0000_0000_0000_0000_0000_0000,
        96,
        V6Rule::EmbeddedLow32,
    ),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        V6Rule::Internal("nat64-local"),
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        V6Rule::Internal("discard"),
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        V6Rule::Internal("documentation"),
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        32,
        V6Rule::Internal("teredo"),
    ),
    (
        0x2002_0000_0000_0000_0000_0000_0000_0000,
        16,
        V6Rule::Embedded6to4,
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        V6Rule::Internal("documentation"),
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        V6Rule::Internal("unique-local"),
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        V6Rule::Internal("link-local"),
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        V6Rule::Internal("site-local"),
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        V6Rule::Internal("multicast"),
    ),
];

fn v4_in(ip: u32, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == u32::from_be_bytes(net) & mask
}

fn v6_in(ip: u128, net: u128, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net & mask
}

fn v4_internal(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(net, len, _)| v4_in(bits, *net, *len))
        .map(|(_, _, name)| *name)
}

fn v6_internal(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    for (net, len, rule) in V6_RANGES {
        if !v6_in(bits, *net, *len) {
            continue;
        }
        return match rule {
            V6Rule::Internal(name) => Some(name),
            V6Rule::EmbeddedLow32 => v4_internal(Ipv4Addr::from(bits as u32)),
            V6Rule::Embedded6to4 => v4_internal(Ipv4Addr::from((bits >> 80) as u32)),
        };
    }
    // Every public IPv6 unicast address is in 2000::/3 today; the rest is reserved.
    if !v6_in(bits, 0x2000 << 112, 3) {
        return Some("reserved");
    }
    None
}

/// `Some(range name)` when `ip` is not a public unicast destination (loopback, private,
/// link-local, CGNAT, multicast, documentation, cloud metadata…). IPv6 forms that embed
/// an IPv4 address reaching it (IPv4-mapped, NAT64, 6to4) are judged by that address.
pub fn is_internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => v6_internal(v6),
    }
}

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("URL scheme `{0}` is not allowed (only https, or http when enabled)")]
    Scheme(String),
    #[error("plain http URLs are not allowed (https is required)")]
    HttpNotAllowed,
    #[error("URL has no host")]
    NoHost,
    #[error("destination {ip} is internal ({range}) and not in the egress allowlist")]
    Internal { ip: IpAddr, range: &'static str },
}

impl Refusal {
    /// The destination address is refused (as opposed to a malformed or disallowed URL).
    pub fn is_blocked_address(&self) -> bool {
        matches!(self, Refusal::Internal { .. })
    }
}

/// Where webhooks may go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept `http://` URLs (otherwise only `https://`).
    pub allow_http: bool,
    /// Internal networks that may be reached anyway (e.g. `10.1.0.0/16`, `127.0.0.1/32`).
    pub allow: Vec<IpNet>,
}

impl Policy {
    fn allowlisted(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }

    /// `Ok` when `ip` is a public destination or inside an allowlisted network (for an
    /// IPv4-mapped IPv6 address, the allowlist is also matched against the IPv4 address).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        match is_internal(ip) {
            None => Ok(()),
            Some(_) if self.allowlisted(ip) => Ok(()),
            Some(range) => Err(Refusal::Internal { ip, range }),
        }
    }

    /// Checks the scheme, that there is a host, and the host when it is an IP literal.
    /// Names are checked after resolution, by [`GuardedResolver`].
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refusal::HttpNotAllowed),
            other => return Err(Refusal::Scheme(other.to_owned())),
        }
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(Host::Domain("")) => Err(Refusal::NoHost),
            Some(Host::Domain(_)) => Ok(()),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
        }
    }
}

/// A failed guarded resolution. The egress client finds it in a request error's source
/// chain: [`ResolveError::Blocked`] is a refused destination, the others are DNS failures.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("every address of `{host}` is refused: {}", list_refused(.refused))]
    Blocked {
        host: String,
        refused: Vec<(IpAddr, &'static str)>,
    },
    #[error("cannot resolve `{host}`: {source}")]
    Lookup {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("`{host}` resolved to no address")]
    NoAddress { host: String },
}

fn list_refused(refused: &[(IpAddr, &'static str)]) -> String {
    let mut out = String::new();
    for (i, (ip, range)) in refused.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{ip} ({range})");
    }
    out
}

/// Resolves `host` and keeps only the addresses `policy` accepts (port 0).
pub async fn resolve_checked(policy: &Policy, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    let found =
        tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?;
    let mut seen = HashSet::new();
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in found {
        if !seen.insert(addr.ip()) {
            continue;
        }
        match policy.check_ip(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(Refusal::Internal { ip, range }) => refused.push((ip, range)),
            Err(_) => unreachable!("check_ip only refuses internal addresses"),
        }
    }
    if !allowed.is_empty() {
        if !refused.is_empty() {
            tracing::debug!(host, refused = %list_refused(&refused), "dropped internal addresses");
        }
        return Ok(allowed);
    }
    if refused.is_empty() {
        return Err(ResolveError::NoAddress {
            host: host.to_owned(),
        });
    }
    Err(ResolveError::Blocked {
        host: host.to_owned(),
        refused,
    })
}

/// The egress client's DNS resolver: system resolution (`getaddrinfo` through tokio) with
/// internal addresses removed unless allowlisted.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<Policy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&policy, &host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn policy(allow_http: bool, allow: &[&str]) -> Policy {
        Policy {
            allow_http,
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn ipv4_internal_ranges() {
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("100.100.100.200", "cloud-metadata"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.0.1", "link-local"),
            ("169.254.169.254", "cloud-metadata"),
            ("168.63.129.16", "cloud-metadata"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "ietf-protocol-assignments"),
            ("192.0.0.192", "ietf-protocol-assignments"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4-relay-anycast"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
            ("255.255.255.255", "broadcast"),
        ];
        for (addr, range) in cases {
            assert_eq!(is_internal(ip(addr)), Some(range), "{addr}");
        }
    }

    #[test]
    fn ipv6_internal_ranges() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::127.0.0.1", "ipv4-compatible"),
            ("::8.8.8.8", "ipv4-compatible"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud-metadata"),
            ("::ffff:0:8.8.8.8", "ipv4-translated"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::192.168.0.1", "private"),
            ("64:ff9b:1::1", "nat64-local"),
            ("100::1", "discard"),
            ("2001:db8::1", "documentation"),
            ("2001:db8:ffff::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::", "cloud-metadata"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fd00:ec2::254", "cloud-metadata"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "multicast"),
            ("4000::1", "reserved"),
            ("::2:0:0:1", "reserved"),
        ];
        for (addr, range) in cases {
            assert_eq!(is_internal(ip(addr)), Some(range), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001:82a::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(is_internal(ip(addr)), None, "{addr}");
            assert_eq!(Policy::default().check_ip(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allowlist() {
        let p = policy(true, &["127.0.0.1/32", "10.1.0.0/16", "fd00:1::/32"]);
        assert_eq!(p.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(p.check_ip(ip("10.1.2.3")), Ok(()));
        assert_eq!(p.check_ip(ip("fd00:1::5")), Ok(()));
        for refused in [
            "127.0.0.2",
            "::1",
            "10.2.0.1",
            "169.254.169.254",
            "fd00:2::1",
        ] {
            assert!(
                matches!(p.check_ip(ip(refused)), Err(Refusal::Internal { .. })),
                "{refused}"
            );
        }
        assert_eq!(
            Policy::default().check_ip(ip("127.0.0.1")),
            Err(Refusal::Internal {
                ip: ip("127.0.0.1"),
                range: "loopback"
            })
        );
    }

    #[test]
    fn check_url_schemes() {
        let strict = Policy::default();
        assert_eq!(strict.check_url(&url("https://example.com/hook")), Ok(()));
        assert_eq!(
            strict.check_url(&url("http://example.com/hook")),
            Err(Refusal::HttpNotAllowed)
        );
        let lax = policy(true, &[]);
        assert_eq!(lax.check_url(&url("http://example.com/hook")), Ok(()));
        for (u, scheme) in [
            ("ftp://example.com/", "ftp"),
            ("file:///etc/passwd", "file"),
            ("gopher://example.com/", "gopher"),
            ("data:text/plain,hi", "data"),
        ] {
            assert_eq!(
                lax.check_url(&url(u)),
                Err(Refusal::Scheme(scheme.into())),
                "{u}"
            );
        }
        assert!(!Refusal::HttpNotAllowed.is_blocked_address());
    }

    #[test]
    fn check_url_ip_literals_in_any_notation() {
        let p = policy(true, &[]);
        for u in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://0/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://0xa9fea9fe/",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "https://10.0.0.1:8443/",
            "http://user:pw@192.168.0.1/",
        ] {
            let err = p.check_url(&url(u)).expect_err(u);
            assert!(err.is_blocked_address(), "{u}: {err}");
        }
        assert_eq!(p.check_url(&url("https://93.184.216.34/")), Ok(()));
        assert_eq!(p.check_url(&url("https://[2606:4700::1111]/")), Ok(()));
        let allow = policy(true, &["127.0.0.1/32"]);
        assert_eq!(allow.check_url(&url("http://0x7f000001:8080/")), Ok(()));
        assert_eq!(allow.check_url(&url("http://[::ffff:127.0.0.1]/")), Ok(()));
        assert!(allow.check_url(&url("http://[::1]/")).is_err());
    }

    #[tokio::test]
    async fn resolver_drops_internal_addresses() {
        let err = resolve_checked(&Policy::default(), "localhost")
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Blocked { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1 (loopback)"), "{err}");

        let allow = policy(false, &["127.0.0.1/32"]);
        let addrs = resolve_checked(&allow, "localhost").await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
    }
}
