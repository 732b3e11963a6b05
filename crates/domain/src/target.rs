//! Which URLs and addresses Herald may deliver to.
//!
//! Deliveries go only to `https` URLs on public addresses. A URL is checked
//! when it is saved and again before it is sent to ([`check_url`], which
//! refuses internal literal-IP hosts), and the address actually connected to
//! is checked on every attempt ([`is_public_ip`], used by the engine's
//! resolver), so DNS cannot smuggle an internal address in after the fact. A
//! development setting lifts both rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How strict the rules are. `AllowInsecure` is for development and tests
/// only: `http` and internal addresses are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPolicy {
    PublicHttpsOnly,
    AllowInsecure,
}

/// Why a URL may not be a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("is not a valid absolute URL")]
    Invalid,
    #[error("must use https")]
    NotHttps,
    #[error("must name a host")]
    NoHost,
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("points to an internal address ({0}), which may not receive deliveries")]
    InternalAddress(String),
    #[error("names an internal host ({0}), which may not receive deliveries")]
    InternalHost(String),
    #[error("is longer than 2048 characters")]
    TooLong,
}

/// Checks a URL given for an endpoint. Hostnames are not resolved here (that
/// happens, and is checked, on every attempt); literal addresses and names
/// that are internal by definition are refused at once.
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<url::Url, TargetError> {
    if raw.len() > 2048 {
        return Err(TargetError::TooLong);
    }
    // The URL parser would percent-encode a NUL; the URL is stored and sent
    // as given, so it is refused instead (PostgreSQL's text cannot hold it).
    if raw.contains('\0') {
        return Err(TargetError::Invalid);
    }
    let url = url::Url::parse(raw).map_err(|_| TargetError::Invalid)?;
    let insecure = policy == TargetPolicy::AllowInsecure;
    match url.scheme() {
        "https" => {}
        "http" if insecure => {}
        _ => return Err(TargetError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let host = url.host().ok_or(TargetError::NoHost)?;
    if insecure {
        return Ok(url);
    }
    match host {
        url::Host::Ipv4(ip) => check_ip(IpAddr::V4(ip))?,
        url::Host::Ipv6(ip) => check_ip(IpAddr::V6(ip))?,
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let internal = name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".internal")
                || name.ends_with(".local")
                || name == "metadata"
                || !name.contains('.');
            if internal {
                return Err(TargetError::InternalHost(name));
            }
        }
    }
    Ok(url)
}

/// The path and query of `raw` exactly as written, for the request line:
/// contract §5 sends the URL byte for byte, so there is no dot-segment
/// removal and nothing already percent-encoded is encoded again (`%7C`,
/// even a stray `%zz`, stays). Only bytes that may not stand in a request
/// line (controls, space, `"<>\^`{|}`, non-ASCII) are percent-encoded. The
/// fragment is not sent. An empty path is `/`.
///
/// The scheme and authority are not taken from here: the sender uses the
/// checked, parsed URL's, so the host connected to is the one the target
/// rules passed.
pub fn path_and_query(raw: &str) -> String {
    let after_scheme = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[after_scheme..];
    let authority_end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let rest = &rest[authority_end..];
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let mut out = String::with_capacity(rest.len() + 1);
    if !rest.starts_with('/') {
        out.push('/');
    }
    for &b in rest.as_bytes() {
        let allowed =
            b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}');
        if allowed {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_ip(ip: IpAddr) -> Result<(), TargetError> {
    if is_public_ip(ip) {
        Ok(())
    } else {
        Err(TargetError::InternalAddress(ip.to_string()))
    }
}

/// True for addresses on the public internet; false for loopback, private,
/// link-local, CGNAT, unique-local, multicast, documentation, reserved and
/// cloud metadata addresses, including IPv4 forms embedded in IPv6.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let internal = a == 0                                  // "this network"
        || a == 10                                         // private
        || a == 127                                        // loopback
        || (a == 100 && (64..128).contains(&b))            // CGNAT, incl. 100.100.100.200 metadata
        || (a == 169 && b == 254)                          // link-local, incl. 169.254.169.254
        || (a == 172 && (16..32).contains(&b))             // private
        || (a == 192 && b == 0 && c == 0)                  // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                  // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                // 6to4 relay
        || (a == 192 && b == 168)                          // private
        || (a == 198 && (18..20).contains(&b))             // benchmarking
        || (a == 198 && b == 51 && c == 100)               // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !internal
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let internal = ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00       // unique local, incl. fd00:ec2::254 metadata
        || (s[0] & 0xffc0) == 0xfe80       // link-local
        || (s[0] & 0xffc0) == 0xfec0       // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00       // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only
        || s[0] == 0x2002                  // 6to4 can wrap any v4 address
        || (s[0] == 0x2001 && s[1] == 0)   // Teredo
        || s[0] < 0x2000 || s[0] > 0x3fff; // outside global unicast
    !internal
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4];
    (mapped || compatible || nat64).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: TargetPolicy = TargetPolicy::PublicHttpsOnly;

    #[test]
    fn the_path_and_query_are_sent_as_written() {
        assert_eq!(
            path_and_query("http://127.0.0.1:9/ok/./a/../b?token=a%7Cb&x=%zz#frag"),
            "/ok/./a/../b?token=a%7Cb&x=%zz"
        );
        assert_eq!(path_and_query("https://h.example.com"), "/");
        assert_eq!(path_and_query("https://h.example.com?a=1"), "/?a=1");
        assert_eq!(
            path_and_query("https://h.example.com/a b/\"|é?q={x}"),
            "/a%20b/%22%7C%C3%A9?q=%7Bx%7D"
        );
        assert_eq!(
            path_and_query("https://u:p@h.example.com:8443/x/%2e%2E/y"),
            "/x/%2e%2E/y"
        );
    }

    #[test]
    fn public_https_urls_are_accepted_byte_for_byte() {
        let raw = "https://my-app.com/api/webhook/recall?token=abc";
        assert_eq!(check_url(raw, STRICT).unwrap().as_str(), raw);
        assert!(check_url("https://93.184.216.34/hook", STRICT).is_ok());
        assert!(check_url("https://[2606:2800:220:1::1]/", STRICT).is_ok());
    }

    #[test]
    fn insecure_and_internal_urls_are_refused() {
        assert_eq!(check_url("http://example.com/", STRICT), Err(TargetError::NotHttps));
        assert_eq!(check_url("ftp://example.com/", STRICT), Err(TargetError::NotHttps));
        assert_eq!(check_url("not a url", STRICT), Err(TargetError::Invalid));
        assert_eq!(
            check_url("https://u:p@example.com/", STRICT),
            Err(TargetError::Credentials)
        );
        for raw in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://0.0.0.0/",
        ] {
            assert!(
                matches!(check_url(raw, STRICT), Err(TargetError::InternalAddress(_))),
                "{raw}"
            );
        }
        for raw in [
            "https://localhost/",
            "https://api.localhost/",
            "https://metadata.google.internal/",
            "https://intranet/",
        ] {
            assert!(
                matches!(check_url(raw, STRICT), Err(TargetError::InternalHost(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn the_development_setting_lifts_both_rules() {
        let policy = TargetPolicy::AllowInsecure;
        assert!(check_url("http://127.0.0.1:9000/hook?token=x", policy).is_ok());
        assert!(check_url("ftp://127.0.0.1/", policy).is_err());
    }

    proptest! {
        #[test]
        fn every_loopback_private_and_link_local_v4_is_internal(
            which in 0usize..6, b in any::<u8>(), c in any::<u8>(), d in any::<u8>()
        ) {
            let ip = match which {
                0 => Ipv4Addr::new(127, b, c, d),
                1 => Ipv4Addr::new(10, b, c, d),
                2 => Ipv4Addr::new(172, 16 + (b % 16), c, d),
                3 => Ipv4Addr::new(192, 168, c, d),
                4 => Ipv4Addr::new(169, 254, c, d),
                _ => Ipv4Addr::new(100, 64 + (b % 64), c, d),
            };
            prop_assert!(!is_public_ip(IpAddr::V4(ip)));
            prop_assert!(!is_public_ip(IpAddr::V6(ip.to_ipv6_mapped())));
        }

        #[test]
        fn every_unique_local_and_link_local_v6_is_internal(rest in any::<[u16; 7]>(), which in 0usize..3) {
            let first = match which { 0 => 0xfc00 | (rest[0] & 0x01ff), 1 => 0xfe80 | (rest[0] & 0x003f), _ => 0xff00 | (rest[0] & 0xff) };
            let ip = Ipv6Addr::new(first, rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[0]);
            prop_assert!(!is_public_ip(IpAddr::V6(ip)));
        }
    }
}
