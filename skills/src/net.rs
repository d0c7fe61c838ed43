//! The outbound-HTTP guard shared by the `http.request` handler and job callbacks.
//!
//! Three layers, all needed:
//! - [`NetPolicy::check_url`] refuses a URL before anything is sent: scheme, host allowlist, and
//!   IP-literal hosts in loopback/private/link-local ranges.
//! - [`GuardedResolver`] re-checks every address a host name resolves to, at connect time, so a
//!   name that passed the allowlist cannot be pointed at an internal address later (DNS
//!   rebinding).
//! - [`NetPolicy::client`] builds a client with that resolver, no proxy (a proxy would resolve
//!   the name instead of us) and no redirects (a redirect could leave the allowlist).
//!
//! Responses are read with [`read_capped`], so a large body cannot exhaust memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// The user agent of every outbound request.
pub const USER_AGENT: &str = concat!("rauskuclaw/", env!("CARGO_PKG_VERSION"));

/// Which hosts outbound requests may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Host names (lowercase) or IP literals that may be called. `*.example.com` matches every
    /// subdomain of `example.com` (not `example.com` itself). Empty: nothing may be called.
    pub allowlist: Vec<String>,
    /// Lets allowlisted hosts be (or resolve to) loopback, private and link-local addresses:
    /// for local setups and tests.
    pub allow_private: bool,
}

/// Why an outbound request was refused. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "`{url}` is not a valid URL ({reason}); use an absolute URL such as https://example.com/path"
    )]
    InvalidUrl { url: String, reason: String },
    #[error("scheme `{0}` is not supported; use an http:// or https:// URL")]
    UnsupportedScheme(String),
    #[error("the URL has no host; use an absolute URL such as https://example.com/path")]
    MissingHost,
    #[error(
        "outbound requests are disabled: the allowlist is empty; list the hosts that may be \
         called (RAUSKU_HTTP_ALLOWLIST for http.request, RAUSKU_CALLBACK_ALLOWLIST for callbacks)"
    )]
    EmptyAllowlist,
    #[error(
        "host `{0}` is not on the allowlist (RAUSKU_HTTP_ALLOWLIST for http.request, \
         RAUSKU_CALLBACK_ALLOWLIST for callbacks); add it or use an allowed host"
    )]
    HostNotAllowed(String),
    #[error(
        "address {0} is loopback, private, link-local or otherwise internal and is refused; use a \
         public address, or allow private addresses (RAUSKU_HTTP_ALLOW_PRIVATE / \
         RAUSKU_CALLBACK_ALLOW_PRIVATE) for local setups"
    )]
    ForbiddenAddress(IpAddr),
    #[error("could not resolve host `{host}`: {reason}")]
    Resolve { host: String, reason: String },
    #[error(
        "host `{host}` resolves only to internal addresses ({addrs}) and is refused; allow \
         private addresses (RAUSKU_HTTP_ALLOW_PRIVATE / RAUSKU_CALLBACK_ALLOW_PRIVATE) for local \
         setups"
    )]
    ResolvesToForbidden { host: String, addrs: String },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl NetPolicy {
    /// Parses `url` and checks it against the policy: http or https, a host, the host on the
    /// allowlist, and an IP-literal host not internal (unless `allow_private`). Host names are
    /// checked again when they resolve, by [`GuardedResolver`].
    pub fn check_url(&self, url: &str) -> Result<Url, NetError> {
        let parsed = Url::parse(url).map_err(|e| NetError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => return Err(NetError::UnsupportedScheme(other.to_owned())),
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(NetError::MissingHost)?;
        if self.allowlist.is_empty() {
            return Err(NetError::EmptyAllowlist);
        }
        // The URL parser normalises IP literals (`0x7f000001` → `127.0.0.1`, `[::1]`), so a host
        // that parses as an address is one.
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if ip.is_none() && !self.allows_host(host) {
            return Err(NetError::HostNotAllowed(host.to_owned()));
        }
        if let Some(ip) = ip {
            if !self.allows_ip(ip) {
                return Err(NetError::HostNotAllowed(ip.to_string()));
            }
            if !self.allow_private && is_forbidden_ip(ip) {
                return Err(NetError::ForbiddenAddress(ip));
            }
        }
        Ok(parsed)
    }

    /// Whether the host name `host` is on the allowlist (case-insensitive, trailing dot
    /// ignored).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize(host);
        self.allowlist.iter().any(|entry| {
            let entry = normalize(entry);
            match entry.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => !entry.is_empty() && entry == host,
            }
        })
    }

    /// Whether the IP literal `ip` is on the allowlist (entries may be written `::1` or `[::1]`).
    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allowlist
            .iter()
            .filter_map(|entry| {
                entry
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .ok()
            })
            .any(|allowed: IpAddr| allowed == ip)
    }

    /// The resolver enforcing this policy's private-address rule.
    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            allow_private: self.allow_private,
        }
    }

    /// A client for URLs that passed [`NetPolicy::check_url`]: the [`GuardedResolver`], no
    /// proxy, no redirects, `timeout` for the whole request, user agent `rauskuclaw/<version>`.
    ///
    /// Fails only if the TLS backend cannot be set up. A client is meant to be built once and
    /// reused (it pools connections); `RequestBuilder::timeout` overrides `timeout` per request.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, NetError> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(self.resolver()))
            .no_proxy()
            .redirect(redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(USER_AGENT)
            .build()
            .map_err(NetError::Client)
    }
}

fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `ip` is an address outbound requests must not reach by default: unspecified,
/// loopback, private (RFC 1918), link-local, CGNAT (100.64.0.0/10), multicast, broadcast and
/// reserved IPv4; unspecified, loopback, unique-local (fc00::/7), link-local (fe80::/10),
/// site-local and multicast IPv6; and IPv4-mapped or NAT64 IPv6 forms of forbidden IPv4.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0 // "this network", including the unspecified address
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || ip.is_multicast()
        || a >= 240 // reserved 240.0.0.0/4, including broadcast
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return is_forbidden_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
}

/// A DNS resolver that drops internal addresses (see [`is_forbidden_ip`]) unless private
/// addresses are allowed, and fails if none are left. Because the check runs when the client
/// connects, a name cannot pass the allowlist and then resolve somewhere internal.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Keep internal addresses instead of dropping them.
    pub allow_private: bool,
}

impl GuardedResolver {
    /// Resolves `host` and applies the private-address rule.
    pub async fn lookup(self, host: &str) -> Result<Vec<SocketAddr>, NetError> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| NetError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if found.is_empty() {
            return Err(NetError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".to_owned(),
            });
        }
        if self.allow_private {
            return Ok(found);
        }
        let (allowed, refused): (Vec<_>, Vec<_>) = found
            .into_iter()
            .partition(|addr| !is_forbidden_ip(addr.ip()));
        if allowed.is_empty() {
            let addrs = refused
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(host, %addrs, "refused outbound connection to internal addresses");
            return Err(NetError::ResolvesToForbidden {
                host: host.to_owned(),
                addrs,
            });
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = *self;
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Reads a response body up to `max_bytes`, chunk by chunk. Returns the body and whether it
/// was cut short; the rest of a cut body is not read.
pub async fn read_capped(
    mut resp: reqwest::Response,
    max_bytes: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max_bytes - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), false))
}

/// Finds a [`NetError`] in the source chain of `err` (e.g. a refusal by the
/// [`GuardedResolver`] inside a `reqwest::Error`).
pub fn net_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a NetError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(net) = e.downcast_ref::<NetError>() {
            return Some(net);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], allow_private: bool) -> NetPolicy {
        NetPolicy {
            allowlist: hosts.iter().map(|h| h.to_string()).collect(),
            allow_private,
        }
    }

    #[test]
    fn forbidden_ips() {
        let cases: &[(&str, bool)] = &[
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("127.0.0.1", true),
            ("127.255.255.254", true),
            ("10.0.0.1", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("100.63.255.255", false),
            ("192.0.0.8", true),
            ("224.0.0.1", true),
            ("239.255.255.250", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("1.1.1.1", false),
            ("93.184.216.34", false),
            ("::", true),
            ("::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("ff02::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.1.2.3", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b::808:808", false),
            ("2001:4860:4860::8888", false),
            ("2606:4700:4700::1111", false),
        ];
        for &(ip, forbidden) in cases {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(is_forbidden_ip(parsed), forbidden, "{ip}");
        }
    }

    #[test]
    fn allowlist_matching() {
        let p = policy(
            &["api.example.com", "*.hooks.test", "Upper.Case.ORG"],
            false,
        );
        let cases: &[(&str, bool)] = &[
            ("api.example.com", true),
            ("API.Example.COM", true),
            ("api.example.com.", true),
            ("example.com", false),
            ("x.api.example.com", false),
            ("evilapi.example.com", false),
            ("a.hooks.test", true),
            ("a.b.hooks.test", true),
            ("hooks.test", false),
            ("evilhooks.test", false),
            (".hooks.test", false),
            ("upper.case.org", true),
        ];
        for &(host, allowed) in cases {
            assert_eq!(p.allows_host(host), allowed, "{host}");
        }
        assert!(!policy(&[], true).allows_host("example.com"));
        assert!(!policy(&[""], true).allows_host(""));
    }

    #[test]
    fn check_url_accepts_allowed_urls() {
        let p = policy(&["example.com", "8.8.8.8", "[2001:4860:4860::8888]"], false);
        for url in [
            "https://example.com/a?b=c",
            "http://EXAMPLE.com:8080/",
            "http://8.8.8.8/",
            "https://[2001:4860:4860::8888]/x",
        ] {
            assert!(p.check_url(url).is_ok(), "{url}: {:?}", p.check_url(url));
        }
    }

    #[test]
    fn check_url_refusals() {
        let p = policy(&["example.com", "127.0.0.1", "::1", "10.0.0.1"], false);
        let cases: &[(&str, &str)] = &[
            ("not a url", "not a valid URL"),
            ("/relative/path", "not a valid URL"),
            ("ftp://example.com/", "scheme `ftp`"),
            ("file:///etc/passwd", "scheme `file`"),
            (
                "https://evil.com/",
                "host `evil.com` is not on the allowlist",
            ),
            ("https://example.com.evil.com/", "not on the allowlist"),
            ("http://127.0.0.1:8080/", "address 127.0.0.1"),
            ("http://[::1]/", "address ::1"),
            ("http://10.0.0.1/", "address 10.0.0.1"),
            ("http://0x7f000001/", "address 127.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "not on the allowlist"),
            ("http://8.8.8.8/", "host `8.8.8.8` is not on the allowlist"),
        ];
        for &(url, expected) in cases {
            let err = p.check_url(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        let err = policy(&[], true)
            .check_url("https://example.com/")
            .unwrap_err();
        assert!(matches!(err, NetError::EmptyAllowlist), "{err}");
    }

    #[test]
    fn allow_private_admits_allowlisted_internal_addresses() {
        let p = policy(&["127.0.0.1", "::1"], true);
        assert!(p.check_url("http://127.0.0.1:9/").is_ok());
        assert!(p.check_url("http://[::1]:9/").is_ok());
        let err = p.check_url("http://10.0.0.1/").unwrap_err();
        assert!(matches!(err, NetError::HostNotAllowed(_)), "{err}");
    }

    #[tokio::test]
    async fn resolver_drops_loopback_unless_allowed() {
        let err = GuardedResolver {
            allow_private: false,
        }
        .lookup("localhost")
        .await
        .unwrap_err();
        assert!(matches!(err, NetError::ResolvesToForbidden { .. }), "{err}");
        let addrs = GuardedResolver {
            allow_private: true,
        }
        .lookup("localhost")
        .await
        .unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
