//! The egress proxy: the only way out of an agent jail's network namespace, and the place
//! where the network policy (`RUNBOOKS_AGENT_NETWORK`, `RUNBOOKS_AGENT_ALLOW_HOSTS`) is
//! enforced.
//!
//! A jailed step has its own network namespace, whose only interface is its own loopback.
//! Inside it, the forwarder ([`super::forward`]) relays every TCP connection to this proxy's
//! Unix socket, bind-mounted into the jail. The proxy speaks just enough HTTP/1.1 to learn the
//! destination (`CONNECT host:port`, or an absolute-form `http://` request), decides, and then
//! copies bytes both ways. It never terminates TLS and never reads past the request head.
//!
//! Invariants, and why:
//! - **Names are matched before they are resolved.** In `allowlist` mode a host that is not
//!   listed is refused without a DNS query, so a step cannot leak data through lookups of
//!   names it makes up.
//! - **Every resolved address is checked, and only a checked address is connected to.** The
//!   name is resolved once, here; the socket address we connect to is one of the addresses we
//!   checked. A name that resolves to a public address on one lookup and to `127.0.0.1` on
//!   the next (DNS rebinding) gains nothing. If *any* address of a name is forbidden, the
//!   whole request is refused: a name that mixes public and internal addresses is suspect.
//! - **Internal addresses are out of reach in every mode**: loopback, private, shared (CGNAT),
//!   multicast, broadcast, reserved and documentation ranges, and the machine's own addresses
//!   ([`forbidden_address`]). IPv4-mapped, IPv4-compatible and NAT64 (`64:ff9b::/96`) IPv6
//!   addresses are judged as the IPv4 address they carry. The one exception is the operator's
//!   explicit choice: an allowlist rule that is an IP literal (`10.0.0.5`, `127.0.0.1:8081`)
//!   lets that very address through (a registry mirror on the host, say). A host *name* that
//!   resolves to an internal address is always refused, because names can be made to resolve
//!   anywhere.
//! - **Some addresses are refused even when listed**: link-local ranges (`169.254.0.0/16`,
//!   `fe80::/10`, where cloud metadata services answer with the machine's credentials), the
//!   other well-known metadata addresses, the unspecified address (connecting to `0.0.0.0`
//!   reaches this machine), and the `deny` list the server gives at start (its own listeners).
//! - **Every refusal is told**: the client gets a `403` whose one-line body names the
//!   destination and the reason, and one line goes to the `refusals` channel for the step's
//!   log. Only the destination and our own words are ever printed: request headers (which may
//!   carry credentials) are never logged or echoed, and host names are validated to a strict
//!   character set before they appear anywhere.
//! - **A proxy lives as long as its run**: dropping [`EgressProxy`] stops accepting, aborts
//!   every connection it serves and removes its socket file.
//!
//! What it does not do: look inside tunnels. A rule bounds which addresses a step connects
//! to, not which site on a shared front end answers there (a TLS client can name another
//! site of the same CDN in its handshake). Plain-HTTP requests get the `Host` header of the
//! URL the policy judged, and `Connection: close`, so one connection serves one request.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The most bytes a request head (request line and headers) may take.
const HEAD_CAP: usize = 16 * 1024;

/// How long a client has to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long resolving a name, and then connecting to one of its addresses, may take (each).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections one proxy serves at once; more wait to be accepted. A step that
/// opens connections without end cannot exhaust the server's file descriptors.
const MAX_CONNECTIONS: usize = 256;

/// The pause before accepting again after accepting failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The setting name shown in refusals of hosts that are not listed.
const ALLOW_HOSTS_SETTING: &str = "RUNBOOKS_AGENT_ALLOW_HOSTS";

/// What a jailed step may reach on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPolicy {
    /// Nothing: the jail's network namespace has only its own loopback, and no proxy runs.
    None,
    /// Only the listed hosts, through the egress proxy.
    Allowlist(Vec<HostRule>),
    /// Any public host, through the egress proxy.
    Open,
}

impl NetworkPolicy {
    /// Whether a run under this policy needs an [`EgressProxy`] (and the forwarder in its
    /// jail).
    pub fn needs_proxy(&self) -> bool {
        !matches!(self, NetworkPolicy::None)
    }

    /// The allowlist rule that lets `host:port` through, if any (always none for `none` and
    /// `open`: `open` lets hosts through without a rule). `host` may be a name or an IP
    /// literal, with or without brackets.
    pub fn rule_for(&self, host: &str, port: u16) -> Option<&HostRule> {
        match self {
            NetworkPolicy::Allowlist(rules) => {
                let host = Host::parse(host).ok()?;
                rules.iter().find(|rule| rule.matches_host(&host, port))
            }
            NetworkPolicy::None | NetworkPolicy::Open => None,
        }
    }
}

/// One entry of `RUNBOOKS_AGENT_ALLOW_HOSTS`.
///
/// Forms: a name (`registry.npmjs.org`), a wildcard (`*.pypi.org`: any subdomain of
/// `pypi.org`, at any depth, but **not** `pypi.org` itself; list both when both are needed,
/// so that allowing a domain's subdomains never silently allows the apex, which is often run by
/// someone else), an IP literal (`10.0.0.5`, `[::1]`), each optionally with a port
/// (`api.example.com:443`, `127.0.0.1:8081`, `[::1]:8080`) that restricts it to that port.
/// Names are compared case-insensitively, a trailing dot ignored. A name rule matches a
/// request for that name, never one for an IP literal; an IP rule matches a request for that
/// address (IPv4-mapped IPv6 spellings included), never a name that resolves to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    pattern: Pattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name ending in `.` followed by this one.
    Subdomains(String),
    /// Exactly this address (canonical: IPv4-mapped IPv6 stored as IPv4).
    Ip(IpAddr),
}

impl HostRule {
    /// Whether this rule lets `host:port` through. `host` may be a name or an IP literal, with
    /// or without brackets; garbage matches nothing.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        Host::parse(host).is_ok_and(|host| self.matches_host(&host, port))
    }

    fn matches_host(&self, host: &Host, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.pattern, host) {
            (Pattern::Name(rule), Host::Name(name)) => rule == name,
            (Pattern::Subdomains(rule), Host::Name(name)) => name
                .strip_suffix(rule.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            (Pattern::Ip(rule), Host::Ip(ip)) => *rule == canonical(*ip),
            _ => false,
        }
    }

    /// The address this rule names, when it is an IP literal.
    fn ip(&self) -> Option<IpAddr> {
        match self.pattern {
            Pattern::Ip(ip) => Some(ip),
            Pattern::Name(_) | Pattern::Subdomains(_) => None,
        }
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let rule = text.trim();
        let fail = |why: &str| Err(format!("`{rule}` is not a host rule: {why}"));
        if rule.is_empty() {
            return fail("it is empty");
        }
        if rule.contains("://") || rule.contains('/') {
            return fail("give a host name, not a URL (e.g. `registry.npmjs.org`)");
        }
        if rule == "*" || rule.starts_with("*:") {
            return fail("to allow every host, set RUNBOOKS_AGENT_NETWORK=open");
        }
        let (wildcard, rest) = match rule.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rule),
        };
        if rest.contains('*') {
            return fail("a `*` may only start a rule, as in `*.example.com`");
        }
        let (host, port) = match split_authority(rest) {
            Ok(parts) => parts,
            Err(why) => return fail(&why),
        };
        let port = match port {
            Some(port) => match parse_port(port) {
                Ok(port) => Some(port),
                Err(why) => return fail(&why),
            },
            None => None,
        };
        let host = match Host::parse(host) {
            Ok(host) => host,
            Err(why) => return fail(&why),
        };
        let pattern = match (wildcard, host) {
            (false, Host::Name(name)) => Pattern::Name(name),
            (true, Host::Name(name)) => Pattern::Subdomains(name),
            (false, Host::Ip(ip)) => Pattern::Ip(canonical(ip)),
            (true, Host::Ip(_)) => return fail("a `*.` wildcard needs a domain name"),
        };
        Ok(HostRule { pattern, port })
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.pattern, self.port) {
            (Pattern::Name(name), None) => write!(f, "{name}"),
            (Pattern::Name(name), Some(port)) => write!(f, "{name}:{port}"),
            (Pattern::Subdomains(name), None) => write!(f, "*.{name}"),
            (Pattern::Subdomains(name), Some(port)) => write!(f, "*.{name}:{port}"),
            (Pattern::Ip(ip), None) => write!(f, "{ip}"),
            (Pattern::Ip(ip), Some(port)) => write!(f, "{}", SocketAddr::new(*ip, port)),
        }
    }
}

/// The rules of a `RUNBOOKS_AGENT_ALLOW_HOSTS` value: entries separated by commas and/or
/// whitespace. An empty list is allowed (in `allowlist` mode it lets nothing through). The
/// error names the first bad entry.
pub fn parse_allow_hosts(list: &str) -> Result<Vec<HostRule>, String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(HostRule::from_str)
        .collect()
}

/// A destination host as a client or a rule spells it, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A DNS name: lowercase, no trailing dot, only letters, digits, `-` and `_`, in labels of
    /// 1 to 63 characters, 253 at most in all. Safe to print in a log line.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// A host, without a port: a name, an IPv4 literal, or an IPv6 literal with or without
    /// brackets.
    fn parse(text: &str) -> Result<Host, String> {
        let bracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        if let Some(inner) = bracketed {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| format!("`{inner}` is not an IPv6 address"));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if name.is_empty() {
            return Err("the host name is empty".into());
        }
        if name.len() > 253 {
            return Err("the host name is longer than 253 characters".into());
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err("a part of the host name between dots is empty or too long".into());
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(
                    "a host name may only hold letters, digits, `-`, `_` and dots".to_string(),
                );
            }
        }
        Ok(Host::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// `host[:port]` or `[v6][:port]`, split (the port unparsed). A bare IPv6 address (more than
/// one colon, no brackets) has no port.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| "an opening `[` has no closing `]`".to_string())?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("expected `:port` after `]`".into()),
            },
        };
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => authority
            .split_once(':')
            .map(|(host, port)| (host, Some(port)))
            .ok_or_else(|| "expected host:port".to_string()),
        _ => Ok((authority, None)),
    }
}

/// A port: digits only (`u16::from_str` would take `+443`, a typo worth refusing), 1 to 65535.
fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a number between 1 and 65535".into());
    }
    match port.parse::<u16>() {
        Ok(0) => Err("the port must be between 1 and 65535".into()),
        Ok(port) => Ok(port),
        Err(_) => Err("the port must be a number between 1 and 65535".into()),
    }
}

/// The address as the network treats it: an IPv6 address that carries an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`)
/// becomes that IPv4 address; `::` and `::1` stay IPv6.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        IpAddr::V4(embedded)
    } else {
        ip
    }
}

/// Why a step may not connect to `ip`, or `None` for an ordinary public address. The reason
/// reads after the address: "127.0.0.1 is *a loopback address*". IPv6 addresses that carry
/// an IPv4 address are judged as that address (see the module header).
///
/// Refused: loopback, unspecified, link-local (`169.254.0.0/16`, `fe80::/10`: cloud
/// metadata), private (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, the old `fec0::/10`),
/// shared/CGNAT (`100.64/10`), multicast, broadcast, reserved (`0/8`, `240/4`, `192.0.0/24`,
/// `198.18/15`, `100::/64`) and documentation ranges (`192.0.2/24`, `198.51.100/24`,
/// `203.0.113/24`, `2001:db8::/32`).
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

const LINK_LOCAL: &str = "a link-local address (where cloud metadata services answer)";
const METADATA: &str = "a cloud metadata address";
const UNSPECIFIED: &str = "an unspecified address (it reaches this machine)";

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = if ip.is_unspecified() {
        UNSPECIFIED
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_link_local() {
        LINK_LOCAL
    } else if ip.is_private() {
        "a private address"
    } else if a == 100 && (b & 0xc0) == 64 {
        "a shared (carrier-grade NAT) address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_documentation() {
        "a documentation address"
    } else if a == 0 || a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18)
    {
        "a reserved address"
    } else {
        return None;
    };
    Some(reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let reason = if ip.is_unspecified() {
        UNSPECIFIED
    } else if ip.is_loopback() {
        "a loopback address"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        LINK_LOCAL
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        "a private address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "a documentation address"
    } else if s[..4] == [0x100, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        // Discard-only, and local-use NAT64 (which translates to private networks).
        "a reserved address"
    } else {
        return None;
    };
    Some(reason)
}

/// Why `ip` is refused even when an allowlist rule names it, if it is: link-local and
/// metadata addresses hand out the machine's cloud credentials, and the unspecified address
/// is this machine under a name no rule should use.
fn always_forbidden(ip: IpAddr) -> Option<&'static str> {
    /// Metadata services outside the link-local ranges (Alibaba Cloud; AWS over IPv6).
    const METADATA_ADDRESSES: [IpAddr; 2] = [
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    ];
    let ip = canonical(ip);
    if METADATA_ADDRESSES.contains(&ip) {
        return Some(METADATA);
    }
    match forbidden_address(ip) {
        Some(reason) if reason == LINK_LOCAL || reason == UNSPECIFIED => Some(reason),
        _ => None,
    }
}

/// Whether `ip` is an address of this machine: loopback, unspecified, or assigned to one of
/// its interfaces. Asked by binding a UDP socket to it, which the kernel allows only for
/// local addresses, unless non-local binding is switched on (`ip_nonlocal_bind`); then only
/// loopback and unspecified addresses are known to be local.
fn is_local_address(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return false;
    }
    bind_tells_local() && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether a successful bind means a local address here: binding to a documentation address
/// (never assigned to a machine) must fail.
fn bind_tells_local() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::net::UdpSocket::bind((Ipv4Addr::new(192, 0, 2, 1), 0)).is_err()
            && std::net::UdpSocket::bind((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 0))
                .is_err()
    })
}

/// Whether a connection to `addr` would reach one of the `deny` addresses. An entry with an
/// unspecified IP (`0.0.0.0:8080`, `[::]:8080`, a listener on every interface) covers its
/// port on every address of this machine.
fn denied(addr: SocketAddr, deny: &[SocketAddr]) -> bool {
    let ip = canonical(addr.ip());
    deny.iter().any(|entry| {
        entry.port() == addr.port()
            && if entry.ip().is_unspecified() {
                is_local_address(ip)
            } else {
                canonical(entry.ip()) == ip
            }
    })
}

/// Why a destination was refused. Each message completes "blocked HOST:PORT: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("the agent network is off (RUNBOOKS_AGENT_NETWORK=none)")]
    NetworkOff,
    #[error("not in {ALLOW_HOSTS_SETTING}")]
    NotListed,
    #[error("{0} is the runbooks server's own address")]
    Server(SocketAddr),
    #[error("{ip} is {reason}")]
    Address { ip: IpAddr, reason: &'static str },
}

/// Why an allowed destination could not be reached.
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error("the name does not resolve: {0}")]
    Resolve(#[source] io::Error),
    #[error("the name has no addresses")]
    NoAddresses,
    #[error("resolving the name took longer than {}s", CONNECT_TIMEOUT.as_secs())]
    ResolveTimeout,
    #[error("{0}")]
    Connect(#[source] io::Error),
    #[error("no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
}

/// What stands between a request and a connection.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}

/// Checks one resolved address for a request that `rule` (if any) let through.
fn check_address(
    addr: SocketAddr,
    rule: Option<&HostRule>,
    deny: &[SocketAddr],
) -> Result<(), Refusal> {
    let ip = canonical(addr.ip());
    if denied(addr, deny) {
        return Err(Refusal::Server(SocketAddr::new(ip, addr.port())));
    }
    if let Some(reason) = always_forbidden(ip) {
        return Err(Refusal::Address { ip, reason });
    }
    if rule.and_then(HostRule::ip) == Some(ip) {
        // The operator named this very address.
        return Ok(());
    }
    if let Some(reason) = forbidden_address(ip) {
        return Err(Refusal::Address { ip, reason });
    }
    if is_local_address(ip) {
        return Err(Refusal::Address {
            ip,
            reason: "an address of this machine",
        });
    }
    Ok(())
}

/// What every connection of one proxy shares.
struct Shared {
    policy: Arc<NetworkPolicy>,
    deny: Arc<Vec<SocketAddr>>,
    refusals: UnboundedSender<String>,
}

impl Shared {
    /// Decides on `host:port`, resolves it once, checks every address, and connects to a
    /// checked one.
    async fn open(&self, host: &Host, port: u16) -> Result<TcpStream, Failure> {
        let rule = match &*self.policy {
            NetworkPolicy::None => return Err(Refusal::NetworkOff.into()),
            NetworkPolicy::Open => None,
            NetworkPolicy::Allowlist(rules) => Some(
                rules
                    .iter()
                    .find(|rule| rule.matches_host(host, port))
                    .ok_or(Refusal::NotListed)?,
            ),
        };
        let addrs: Vec<SocketAddr> = match host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => {
                let lookup = tokio::net::lookup_host((name.as_str(), port));
                tokio::time::timeout(CONNECT_TIMEOUT, lookup)
                    .await
                    .map_err(|_| Unreachable::ResolveTimeout)?
                    .map_err(Unreachable::Resolve)?
                    .collect()
            }
        };
        if addrs.is_empty() {
            return Err(Unreachable::NoAddresses.into());
        }
        for addr in &addrs {
            check_address(*addr, rule, &self.deny)?;
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut last = Unreachable::NoAddresses;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(err)) => last = Unreachable::Connect(err),
                Err(_) => return Err(Unreachable::ConnectTimeout.into()),
            }
        }
        Err(last.into())
    }

    fn tell(&self, line: String) {
        // The run may be over and the receiver gone; the client got its answer anyway.
        let _ = self.refusals.send(line);
    }
}

/// The egress proxy of one sandboxed run, listening on a Unix socket. See the module header.
#[derive(Debug)]
pub struct EgressProxy {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
}

impl EgressProxy {
    /// Binds `socket` (which must not exist; mode 0600) and starts serving it under `policy`.
    /// Connections to any of `deny` (the server's own listeners) are refused whatever the
    /// policy. One line per refused or failed connection goes to `refusals`. Must be called
    /// inside a tokio runtime.
    pub fn start(
        socket: &Path,
        policy: Arc<NetworkPolicy>,
        deny: Arc<Vec<SocketAddr>>,
        refusals: UnboundedSender<String>,
    ) -> io::Result<EgressProxy> {
        use std::os::unix::fs::PermissionsExt;
        let listener = UnixListener::bind(socket).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "could not listen on the egress socket {}: {err}",
                    socket.display()
                ),
            )
        })?;
        if let Err(err) = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(socket);
            return Err(err);
        }
        let shared = Arc::new(Shared {
            policy,
            deny,
            refusals,
        });
        let accept = tokio::spawn(accept_loop(listener, shared));
        Ok(EgressProxy {
            path: socket.to_path_buf(),
            accept,
        })
    }

    /// The socket the proxy listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        // The accept loop owns the set of connection tasks: cancelling it drops the set, which
        // aborts every connection.
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut failing = false;
    loop {
        // Reap finished connections so the set does not grow with the run.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            Some(_) = connections.join_next() => continue,
        };
        let Ok(slot) = slot else {
            return; // The semaphore is never closed.
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                failing = false;
                let shared = shared.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    // A failed copy is the client's or the destination's business: the bytes
                    // stop, nothing else to do.
                    let _ = serve(stream, &shared).await;
                });
            }
            Err(err) => {
                // Out of file descriptors, most likely. Told once, then retried after a pause
                // (a back-off: retrying at once would only spin).
                if !failing {
                    shared.tell(format!(
                        "the egress proxy could not accept a connection: {err}"
                    ));
                }
                failing = true;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A parsed proxy request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: Host,
    port: u16,
    /// For a plain-HTTP request: the head to send to the origin server.
    forward: Option<Vec<u8>>,
}

impl Request {
    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Reads the request head; `None` when the client went away, was too slow or sent too much
/// (answered, where it makes sense). The bytes read past the head come back with it.
async fn read_head(client: &mut UnixStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut searched: usize = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => {
                respond(
                    client,
                    "408 Request Timeout",
                    "the request head took too long",
                )
                .await;
                return Ok(None);
            }
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let from = searched.saturating_sub(3);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            if end > HEAD_CAP {
                break;
            }
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        searched = buf.len();
        if buf.len() > HEAD_CAP {
            break;
        }
    }
    respond(
        client,
        "431 Request Header Fields Too Large",
        "the request head is over 16 KiB",
    )
    .await;
    Ok(None)
}

/// Parses a request head. Errors are our own words, never the client's bytes (a request line
/// may carry credentials in its URL).
fn parse_request(head: &[u8]) -> Result<Request, &'static str> {
    let head = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("the request head does not end with an empty line")?;
    let (line, headers) = match head.windows(2).position(|w| w == b"\r\n") {
        Some(i) => (&head[..i], &head[i + 2..]),
        None => (head, &head[head.len()..]),
    };
    let line = std::str::from_utf8(line).map_err(|_| "the request line is not text")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not `METHOD TARGET HTTP/1.1`");
    };
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err("the request method is not a token");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
    }
    if method == "CONNECT" {
        let (host, port) =
            split_authority(target).map_err(|_| "CONNECT needs a host:port target")?;
        let port = port
            .ok_or("CONNECT needs a host:port target")
            .and_then(|p| parse_port(p).map_err(|_| "CONNECT needs a valid port"))?;
        let host = Host::parse(host).map_err(|_| "the CONNECT host is not a valid host")?;
        return Ok(Request {
            host,
            port,
            forward: None,
        });
    }
    let scheme = target.get(..7).unwrap_or_default();
    if scheme.eq_ignore_ascii_case("https:/") {
        return Err("https:// URLs go through CONNECT (set HTTPS_PROXY, not just HTTP_PROXY)");
    }
    if !scheme.eq_ignore_ascii_case("http://") {
        return Err("this is a proxy: send CONNECT host:port or an absolute http:// URL");
    }
    let rest = &target[7..];
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("URLs with user information are not forwarded");
    }
    let (host, port) = split_authority(authority).map_err(|_| "the URL's host is not valid")?;
    let port = match port {
        None | Some("") => 80,
        Some(port) => parse_port(port).map_err(|_| "the URL's port is not valid")?,
    };
    let host = Host::parse(host).map_err(|_| "the URL's host is not valid")?;
    let path = match path.as_bytes().first() {
        None | Some(b'#') => "/".to_string(),
        Some(b'?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let path = path.split('#').next().unwrap_or("/");

    // The Host header names the URL's host, whatever the client wrote there (RFC 9112 §3.2.2):
    // the origin must not be asked for a site other than the one the policy allowed.
    let authority = match port {
        80 => host.to_string(),
        port => format!("{host}:{port}"),
    };
    let mut forward = format!("{method} {path} {version}\r\nHost: {authority}\r\n").into_bytes();
    for header in headers.split(|b| *b == b'\n') {
        let header = header.strip_suffix(b"\r").unwrap_or(header);
        if header.is_empty() {
            continue;
        }
        if header[0] == b' ' || header[0] == b'\t' {
            return Err("folded header lines are not accepted");
        }
        let colon = header
            .iter()
            .position(|b| *b == b':')
            .ok_or("a header line has no `:`")?;
        let name = header[..colon].to_ascii_lowercase();
        // Hop-by-hop: the proxy's own credentials and the client's connection wishes stay
        // here. The origin is told to close after one response, so a client that reuses the
        // connection for another host cannot send that request to this one.
        if name.starts_with(b"proxy-")
            || name == b"connection"
            || name == b"keep-alive"
            || name == b"host"
        {
            continue;
        }
        forward.extend_from_slice(header);
        forward.extend_from_slice(b"\r\n");
    }
    forward.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        host,
        port,
        forward: Some(forward),
    })
}

/// Sends a short plain-text answer and closes our side; errors ignored (the client may be
/// gone already).
async fn respond(client: &mut UnixStream, status: &str, message: &str) {
    let body = format!("runbooks: {message}\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Serves one client connection from request to the end of the tunnel.
async fn serve(mut client: UnixStream, shared: &Shared) -> io::Result<()> {
    let Some((head, rest)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let request = match parse_request(&head) {
        Ok(request) => request,
        Err(why) => {
            shared.tell(format!(
                "rejected a request that was not for a proxy: {why}"
            ));
            respond(&mut client, "400 Bad Request", why).await;
            return Ok(());
        }
    };
    let target = request.target();
    let mut upstream = match shared.open(&request.host, request.port).await {
        Ok(upstream) => upstream,
        Err(Failure::Refused(refusal)) => {
            shared.tell(format!("blocked {target}: {refusal}"));
            let message = format!("connection to {target} refused: {refusal}");
            respond(&mut client, "403 Forbidden", &message).await;
            return Ok(());
        }
        Err(Failure::Unreachable(why)) => {
            shared.tell(format!("could not reach {target}: {why}"));
            let message = format!("could not reach {target}: {why}");
            respond(&mut client, "502 Bad Gateway", &message).await;
            return Ok(());
        }
    };
    match &request.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
        }
        Some(head) => upstream.write_all(head).await?,
    }
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    fn rule(text: &str) -> HostRule {
        text.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print() {
        for (text, shown) in [
            ("registry.npmjs.org", "registry.npmjs.org"),
            ("Registry.NPMjs.org.", "registry.npmjs.org"),
            ("*.pypi.org", "*.pypi.org"),
            ("*.PyPI.org:443", "*.pypi.org:443"),
            ("api.example.com:443", "api.example.com:443"),
            ("127.0.0.1:8081", "127.0.0.1:8081"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("10.0.0.5", "10.0.0.5"),
            ("[::ffff:10.0.0.5]:80", "10.0.0.5:80"),
            ("my_host-1.internal", "my_host-1.internal"),
        ] {
            assert_eq!(rule(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn garbage_rules_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("*", "RUNBOOKS_AGENT_NETWORK=open"),
            ("*:443", "RUNBOOKS_AGENT_NETWORK=open"),
            ("https://pypi.org", "not a URL"),
            ("pypi.org/simple", "not a URL"),
            ("foo.*.org", "may only start"),
            ("*.10.0.0.5", "needs a domain name"),
            ("host:0", "between 1 and 65535"),
            ("host:65536", "a number"),
            ("host:+443", "a number"),
            ("host:", "a number"),
            ("host:http", "a number"),
            ("[::1", "no closing"),
            ("[::1]x", "`:port`"),
            ("[nonsense]:80", "not an IPv6 address"),
            ("bad host", "letters, digits"),
            ("ex!ample.com", "letters, digits"),
            ("a..b", "empty or too long"),
            (".", "empty"),
        ] {
            let err = text.parse::<HostRule>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("is not a host rule"), "{text:?}: {err}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(long.parse::<HostRule>().is_err());
    }

    #[test]
    fn allow_host_lists() {
        assert_eq!(parse_allow_hosts("").unwrap(), vec![]);
        assert_eq!(parse_allow_hosts(" ,\n ").unwrap(), vec![]);
        let rules =
            parse_allow_hosts("registry.npmjs.org, *.pypi.org\napi.example.com:443,,10.0.0.5")
                .unwrap();
        let shown: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "registry.npmjs.org",
                "*.pypi.org",
                "api.example.com:443",
                "10.0.0.5"
            ]
        );
        let err = parse_allow_hosts("pypi.org, https://evil.example").unwrap_err();
        assert!(err.contains("`https://evil.example`"), "{err}");
    }

    #[test]
    fn which_policies_use_the_proxy() {
        assert!(!NetworkPolicy::None.needs_proxy());
        assert!(NetworkPolicy::Open.needs_proxy());
        assert!(NetworkPolicy::Allowlist(vec![]).needs_proxy());
    }

    #[test]
    fn rules_match_names_subdomains_ports_and_addresses() {
        let npm = rule("registry.npmjs.org");
        assert!(npm.matches("registry.npmjs.org", 443));
        assert!(npm.matches("REGISTRY.npmjs.org.", 80));
        assert!(!npm.matches("npmjs.org", 443));
        assert!(!npm.matches("evil.registry.npmjs.org", 443));
        assert!(!npm.matches("registry.npmjs.org.evil.com", 443));

        let pypi = rule("*.pypi.org");
        assert!(pypi.matches("files.pypi.org", 443));
        assert!(pypi.matches("a.b.pypi.org", 443));
        assert!(!pypi.matches("pypi.org", 443));
        assert!(!pypi.matches("evilpypi.org", 443));
        assert!(!pypi.matches(".pypi.org", 443));

        let api = rule("api.example.com:443");
        assert!(api.matches("api.example.com", 443));
        assert!(!api.matches("api.example.com", 80));

        let mirror = rule("127.0.0.1:8081");
        assert!(mirror.matches("127.0.0.1", 8081));
        assert!(mirror.matches("[::ffff:127.0.0.1]", 8081));
        assert!(!mirror.matches("127.0.0.1", 8082));
        assert!(!mirror.matches("localhost", 8081));
        let v6 = rule("[::1]:8080");
        assert!(v6.matches("[::1]", 8080));
        assert!(v6.matches("::1", 8080));
        assert!(!v6.matches("127.0.0.1", 8080));
        let any_port = rule("10.0.0.5");
        assert!(any_port.matches("10.0.0.5", 1));
        assert!(!any_port.matches("10.0.0.6", 1));
        // A name rule never matches an address, even one it might resolve to.
        assert!(!rule("localhost").matches("127.0.0.1", 80));
        assert!(!npm.matches("not a host", 443));

        let policy = NetworkPolicy::Allowlist(vec![npm.clone(), api.clone()]);
        assert_eq!(policy.rule_for("api.example.com", 443), Some(&api));
        assert_eq!(policy.rule_for("api.example.com", 80), None);
        assert_eq!(NetworkPolicy::Open.rule_for("api.example.com", 443), None);
    }

    #[test]
    fn address_classes() {
        let reason = |ip: &str| forbidden_address(ip.parse().unwrap());
        for (ip, expected) in [
            ("127.0.0.1", "a loopback address"),
            ("127.255.0.9", "a loopback address"),
            ("::1", "a loopback address"),
            ("0.0.0.0", UNSPECIFIED),
            ("::", UNSPECIFIED),
            ("169.254.169.254", LINK_LOCAL),
            ("fe80::1", LINK_LOCAL),
            ("febf::1", LINK_LOCAL),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("fc00::1", "a private address"),
            ("fd12:3456::1", "a private address"),
            ("fec0::1", "a private address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("100.127.255.255", "a shared (carrier-grade NAT) address"),
            ("224.0.0.1", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
            ("192.0.2.7", "a documentation address"),
            ("198.51.100.7", "a documentation address"),
            ("203.0.113.7", "a documentation address"),
            ("2001:db8::7", "a documentation address"),
            ("0.1.2.3", "a reserved address"),
            ("240.0.0.1", "a reserved address"),
            ("192.0.0.8", "a reserved address"),
            ("198.18.0.1", "a reserved address"),
            ("100::1", "a reserved address"),
            ("64:ff9b:1::a00:1", "a reserved address"),
            // IPv6 spellings of IPv4 addresses are judged as IPv4.
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", LINK_LOCAL),
            ("::127.0.0.1", "a loopback address"),
            ("::10.0.0.1", "a private address"),
            ("64:ff9b::10.0.0.1", "a private address"),
            ("64:ff9b::169.254.169.254", LINK_LOCAL),
        ] {
            assert_eq!(reason(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn listed_addresses_pass_but_metadata_and_the_server_never_do() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let deny = [addr("127.0.0.1:8080"), addr("0.0.0.0:5432")];
        let mirror = rule("127.0.0.1:8081");
        // Named by an IP rule: through; by a name or nothing: refused.
        assert_eq!(
            check_address(addr("127.0.0.1:8081"), Some(&mirror), &deny),
            Ok(())
        );
        assert_eq!(
            check_address(addr("127.0.0.1:8081"), Some(&rule("localhost")), &deny),
            Err(Refusal::Address {
                ip: "127.0.0.1".parse().unwrap(),
                reason: "a loopback address"
            })
        );
        assert!(check_address(addr("127.0.0.1:8081"), None, &deny).is_err());
        // The server's own listeners, even when listed, in any spelling.
        for denied in [
            "127.0.0.1:8080",
            "[::ffff:127.0.0.1]:8080",
            "127.0.0.1:5432",
        ] {
            let err = check_address(addr(denied), Some(&rule("127.0.0.1")), &deny).unwrap_err();
            assert!(matches!(err, Refusal::Server(_)), "{denied}: {err}");
            assert!(
                err.to_string()
                    .ends_with("is the runbooks server's own address")
            );
        }
        // An unspecified deny entry covers this machine's addresses only.
        assert_eq!(check_address(addr("1.1.1.1:5432"), None, &deny), Ok(()));
        // Link-local and metadata: never.
        for never in [
            "169.254.169.254:80",
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
        ] {
            let listed = rule(never);
            let err = check_address(addr(never), Some(&listed), &[]).unwrap_err();
            assert!(matches!(err, Refusal::Address { .. }), "{never}: {err}");
        }
        assert!(check_address(addr("0.0.0.0:8081"), Some(&rule("0.0.0.0:8081")), &[]).is_err());
        assert_eq!(check_address(addr("1.1.1.1:443"), None, &[]), Ok(()));
    }

    #[test]
    fn loopback_is_local_and_documentation_addresses_are_not() {
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(is_local_address("::".parse().unwrap()));
        assert!(!is_local_address("203.0.113.9".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn ipv6_spellings_of_ipv4_are_judged_as_ipv4(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            let expected = forbidden_address(IpAddr::V4(v4));
            prop_assert_eq!(forbidden_address(IpAddr::V6(v4.to_ipv6_mapped())), expected);
            let [a, b, c, d] = v4.octets();
            let nat64 = Ipv6Addr::new(
                0x64, 0xff9b, 0, 0, 0, 0,
                u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]),
            );
            prop_assert_eq!(forbidden_address(IpAddr::V6(nat64)), expected);
            if bits > 1 {
                prop_assert_eq!(forbidden_address(IpAddr::V6(v4.to_ipv6_compatible())), expected);
            }
            let listed = HostRule { pattern: Pattern::Ip(IpAddr::V4(v4)), port: None };
            let mapped = format!("[{}]", v4.to_ipv6_mapped());
            prop_assert!(listed.matches(&mapped, 1));
        }
    }

    #[test]
    fn request_heads() {
        let connect =
            parse_request(b"CONNECT Files.PyPI.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(connect.host, Host::Name("files.pypi.org".into()));
        assert_eq!(connect.port, 443);
        assert_eq!(connect.forward, None);
        let v6 = parse_request(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(v6.target(), "[::1]:8080");

        let get = parse_request(
            b"GET http://Example.com/a/b?c=d HTTP/1.1\r\nHost: elsewhere.example\r\n\
              Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
              Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(get.target(), "example.com:80");
        assert_eq!(
            String::from_utf8(get.forward.unwrap()).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        );
        let query = parse_request(b"POST http://h:8080?x HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(query.target(), "h:8080");
        assert_eq!(
            String::from_utf8(query.forward.unwrap()).unwrap(),
            "POST /?x HTTP/1.0\r\nHost: h:8080\r\nConnection: close\r\n\r\n"
        );
        let bare = parse_request(b"GET http://h HTTP/1.1\r\n\r\n").unwrap();
        assert!(
            bare.forward
                .unwrap()
                .starts_with(b"GET / HTTP/1.1\r\nHost: h\r\n")
        );

        for (head, why) in [
            (&b"GET /path HTTP/1.1\r\n\r\n"[..], "this is a proxy"),
            (b"GET https://h/ HTTP/1.1\r\n\r\n", "CONNECT"),
            (b"CONNECT h HTTP/1.1\r\n\r\n", "host:port"),
            (b"CONNECT h:0 HTTP/1.1\r\n\r\n", "valid port"),
            (b"CONNECT bad!host:443 HTTP/1.1\r\n\r\n", "not a valid host"),
            (b"GET http://u:p@h/ HTTP/1.1\r\n\r\n", "user information"),
            (b"GET http://h/ HTTP/2\r\n\r\n", "HTTP/1.0"),
            (b"GET  http://h/ HTTP/1.1\r\n\r\n", "METHOD TARGET"),
            (b"\x16\x03\x01 garbage\r\n\r\n", "METHOD TARGET"),
            (b"\xff\xfe x y\r\n\r\n", "not text"),
            (b"GET http://h/ HTTP/1.1\r\nno colon\r\n\r\n", "no `:`"),
            (
                b"GET http://h/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                "folded",
            ),
        ] {
            let err = parse_request(head).unwrap_err();
            assert!(
                err.contains(why),
                "{:?}: {err}",
                String::from_utf8_lossy(head)
            );
        }
    }

    /// A proxy on a socket in its own temp dir, and the receiving end of its refusals.
    struct Running {
        _dir: tempfile::TempDir,
        proxy: EgressProxy,
        refusals: mpsc::UnboundedReceiver<String>,
    }

    fn start(policy: NetworkPolicy, deny: Vec<SocketAddr>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (tx, refusals) = mpsc::unbounded_channel();
        let proxy = EgressProxy::start(
            &dir.path().join("egress.sock"),
            Arc::new(policy),
            Arc::new(deny),
            tx,
        )
        .unwrap();
        Running {
            _dir: dir,
            proxy,
            refusals,
        }
    }

    /// A loopback TCP server that answers every line with `echo: LINE`.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if write
                            .write_all(format!("echo: {line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A listener that must never be connected to: the test checks its queue at the end.
    fn forbidden_listener() -> std::net::TcpListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    fn assert_never_reached(listener: &std::net::TcpListener) {
        match listener.accept() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the forbidden listener was reached from {peer}"),
            Err(err) => panic!("checking the forbidden listener: {err}"),
        }
    }

    /// Sends `head` through the proxy and reads the answer's status line and headers.
    async fn ask(
        proxy: &EgressProxy,
        head: &str,
    ) -> (
        String,
        BufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        let stream = UnixStream::connect(proxy.path()).await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(head.as_bytes()).await.unwrap();
        let mut read = BufReader::new(read);
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            answer.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        (answer, read, write)
    }

    async fn connect_through(proxy: &EgressProxy, target: &str) -> (String, String) {
        let (answer, mut read, _write) = ask(
            proxy,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        )
        .await;
        let mut body = String::new();
        read.read_to_string(&mut body).await.unwrap();
        (answer, body)
    }

    #[tokio::test]
    async fn an_allowed_connect_reaches_a_listed_address() {
        let echo = echo_server().await;
        let mut running = start(
            NetworkPolicy::Allowlist(vec![rule(&echo.to_string())]),
            vec![],
        );
        let (answer, mut read, mut write) = ask(
            &running.proxy,
            &format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n"),
        )
        .await;
        assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n");
        write.write_all(b"hello\n").await.unwrap();
        let mut line = String::new();
        read.read_line(&mut line).await.unwrap();
        assert_eq!(line, "echo: hello\n");
        // Nothing was refused.
        drop((read, write));
        assert!(running.refusals.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_unlisted_host_is_refused_and_named() {
        let echo = echo_server().await;
        let mut running = start(
            NetworkPolicy::Allowlist(vec![rule("registry.npmjs.org")]),
            vec![],
        );
        let (answer, body) = connect_through(&running.proxy, &echo.to_string()).await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("Content-Type: text/plain"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert_eq!(
            body,
            format!("runbooks: connection to {echo} refused: not in RUNBOOKS_AGENT_ALLOW_HOSTS\n")
        );
        assert_eq!(
            running.refusals.recv().await.unwrap(),
            format!("blocked {echo}: not in RUNBOOKS_AGENT_ALLOW_HOSTS")
        );
        // Not listed, so never resolved: a made-up name is refused the same way.
        let (answer, _) = connect_through(&running.proxy, "leak-data.example.invalid:443").await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert_eq!(
            running.refusals.recv().await.unwrap(),
            "blocked leak-data.example.invalid:443: not in RUNBOOKS_AGENT_ALLOW_HOSTS"
        );
    }

    #[tokio::test]
    async fn open_still_refuses_internal_metadata_and_server_addresses() {
        let forbidden = forbidden_listener();
        let server = forbidden_listener();
        let forbidden_addr = forbidden.local_addr().unwrap();
        let server_addr = server.local_addr().unwrap();

        let mut running = start(NetworkPolicy::Open, vec![server_addr]);
        for (target, reason) in [
            (
                forbidden_addr.to_string(),
                "127.0.0.1 is a loopback address".to_string(),
            ),
            (
                format!("[::ffff:127.0.0.1]:{}", forbidden_addr.port()),
                "127.0.0.1 is a loopback address".to_string(),
            ),
            (
                "169.254.169.254:80".to_string(),
                format!("169.254.169.254 is {LINK_LOCAL}"),
            ),
            (
                server_addr.to_string(),
                format!("{server_addr} is the runbooks server's own address"),
            ),
        ] {
            let (answer, body) = connect_through(&running.proxy, &target).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
            assert_eq!(
                body,
                format!("runbooks: connection to {target} refused: {reason}\n")
            );
            assert_eq!(
                running.refusals.recv().await.unwrap(),
                format!("blocked {target}: {reason}")
            );
        }

        // Listed as IP literals, the metadata address and the server are still refused, while
        // the loopback listener is the operator's choice.
        let listed = NetworkPolicy::Allowlist(vec![
            rule("169.254.169.254"),
            rule(&server_addr.to_string()),
        ]);
        let mut running = start(listed, vec![server_addr]);
        for target in ["169.254.169.254:80".to_string(), server_addr.to_string()] {
            let (answer, _) = connect_through(&running.proxy, &target).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
            let line = running.refusals.recv().await.unwrap();
            assert!(line.starts_with(&format!("blocked {target}: ")), "{line}");
        }
        assert_never_reached(&forbidden);
        assert_never_reached(&server);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_even_when_listed() {
        let forbidden = forbidden_listener();
        let port = forbidden.local_addr().unwrap().port();
        let mut running = start(NetworkPolicy::Allowlist(vec![rule("localhost")]), vec![]);
        let (answer, body) = connect_through(&running.proxy, &format!("localhost:{port}")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(body.contains("is a loopback address"), "{body}");
        let line = running.refusals.recv().await.unwrap();
        assert!(
            line.starts_with(&format!("blocked localhost:{port}: ")),
            "{line}"
        );
        assert_never_reached(&forbidden);
    }

    #[tokio::test]
    async fn an_allowed_host_that_does_not_answer_is_a_bad_gateway() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = format!("127.0.0.1:{port}");
        let mut running = start(NetworkPolicy::Allowlist(vec![rule(&target)]), vec![]);
        let (answer, body) = connect_through(&running.proxy, &target).await;
        assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway"), "{answer}");
        assert!(
            body.starts_with(&format!("runbooks: could not reach {target}: ")),
            "{body}"
        );
        let line = running.refusals.recv().await.unwrap();
        assert!(
            line.starts_with(&format!("could not reach {target}: ")),
            "{line}"
        );
    }

    #[tokio::test]
    async fn plain_http_is_forwarded_in_origin_form_without_proxy_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = [0u8; 5];
            stream.read_exact(&mut body).await.unwrap();
            stream
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await
                .unwrap();
            seen_tx.send((head, body)).unwrap();
        });
        let running = start(
            NetworkPolicy::Allowlist(vec![rule(&origin.to_string())]),
            vec![],
        );
        let (answer, mut read, _write) = ask(
            &running.proxy,
            &format!(
                "POST http://{origin}/upload?x=1 HTTP/1.1\r\nHost: {origin}\r\n\
                 Proxy-Authorization: Basic c2VjcmV0\r\nContent-Length: 5\r\n\r\nhello"
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let mut body = String::new();
        read.read_to_string(&mut body).await.unwrap();
        assert_eq!(body, "ok");
        let (head, sent) = seen_rx.await.unwrap();
        assert_eq!(
            head,
            format!(
                "POST /upload?x=1 HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\n\
                 Connection: close\r\n\r\n"
            )
        );
        assert_eq!(&sent, b"hello");
    }

    #[tokio::test]
    async fn requests_that_are_not_for_a_proxy_get_a_400() {
        let mut running = start(NetworkPolicy::Open, vec![]);
        let (answer, mut read, _write) = ask(&running.proxy, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
        let mut body = String::new();
        read.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("runbooks: this is a proxy"), "{body}");
        let line = running.refusals.recv().await.unwrap();
        assert!(line.starts_with("rejected a request"), "{line}");

        let (answer, _, _) = ask(
            &running.proxy,
            &format!("GET /{} HTTP/1.1\r\n", "a".repeat(HEAD_CAP)),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_tunnels_and_its_socket() {
        let echo = echo_server().await;
        let running = start(
            NetworkPolicy::Allowlist(vec![rule(&echo.to_string())]),
            vec![],
        );
        let path = running.proxy.path().to_path_buf();
        let (answer, mut read, mut write) =
            ask(&running.proxy, &format!("CONNECT {echo} HTTP/1.1\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        write.write_all(b"one\n").await.unwrap();
        let mut line = String::new();
        read.read_line(&mut line).await.unwrap();
        assert_eq!(line, "echo: one\n");

        let Running { _dir, proxy, .. } = running;
        drop(proxy);
        // The tunnel ends: end of file (or a reset), never another echo.
        let mut rest = String::new();
        let ended = read.read_to_string(&mut rest).await;
        assert!(ended.is_err() || rest.is_empty(), "{rest}");
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).await.is_err());
    }
}
