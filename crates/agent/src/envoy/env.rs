//! Environment variables read through an injectable map, with strict parsers that name the
//! variable in every error (an unknown or malformed value is an error, never a silent default).

use std::collections::HashMap;

/// A source of environment variables. The process environment in production, a map in tests
/// (`std::env::set_var` is banned: it is process-global).
pub trait Strings {
    /// The value of `name`, or `None` when unset. Empty values count as unset, as container
    /// specs often carry `NAME=""` for "not configured".
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

/// A fixed map of variables (tests, and the demo which builds its sidecars in-process).
#[derive(Clone, Debug, Default)]
pub struct EnvMap(pub HashMap<String, String>);

// === impl ProcessEnv ===

impl Strings for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

// === impl EnvMap ===

impl EnvMap {
    /// A map from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> EnvMap {
        EnvMap(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl Strings for EnvMap {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// Collects every problem found while reading variables, so one run reports all of them.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    /// `Ok(())` when nothing went wrong, else one error listing every problem.
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", self.0.join("; "))
        }
    }
}

/// Parses an App Mesh boolean (`1`/`0`, `true`/`false`, case-insensitive).
pub fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{name}: expected 1, 0, true or false, got `{v}`")),
    }
}

/// Parses a TCP/UDP port (1..=65535).
pub fn parse_port(name: &str, v: &str) -> Result<u16, String> {
    match v.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("{name}: port {p} is out of range 1..65535")),
        Err(_) => Err(format!("{name}: expected a port number, got `{v}`")),
    }
}

/// Parses an unsigned integer within `lo..=hi`.
pub fn parse_u64_in(name: &str, v: &str, lo: u64, hi: u64) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{name}: {n} is out of range {lo}..{hi}")),
        Err(_) => Err(format!("{name}: expected a whole number, got `{v}`")),
    }
}

/// Parses a duration: a Go-style `500ms`, `5s`, `1m`, or bare seconds (`5`). Returns
/// milliseconds.
pub fn parse_duration_ms(name: &str, v: &str) -> Result<u64, String> {
    let t = v.trim();
    let bad = || format!("{name}: expected a duration like 5s, 500ms or 1m, got `{v}`");
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses a host (IPv4, IPv6 or DNS name) and port from `host:port` or `[v6]:port`.
pub fn parse_host_port(name: &str, v: &str) -> Result<(String, u16), String> {
    let t = v.trim();
    let bad = || format!("{name}: expected host:port (or [ipv6]:port), got `{v}`");
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        t.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains(':') && !t.starts_with('[') {
        return Err(bad());
    }
    check_host(name, host)?;
    Ok((host.to_owned(), parse_port(name, port)?))
}

/// Checks that `host` is an IP address or a plausible DNS name.
pub fn check_host(name: &str, host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: `{host}` is neither an IP address nor a DNS name"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_name_the_variable() {
        assert!(parse_bool("X", "yes").unwrap_err().contains("X"));
        assert!(parse_port("P", "0").unwrap_err().contains("P: port 0"));
        assert!(
            parse_port("P", "70000")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_port("P", "abc").unwrap_err().contains("P:"));
        assert_eq!(parse_duration_ms("D", "500ms"), Ok(500));
        assert_eq!(parse_duration_ms("D", "5s"), Ok(5000));
        assert_eq!(parse_duration_ms("D", "7"), Ok(7000));
        assert!(parse_duration_ms("D", "5h").is_err());
        assert_eq!(
            parse_host_port("E", "127.0.0.1:7081"),
            Ok(("127.0.0.1".into(), 7081))
        );
        assert_eq!(parse_host_port("E", "[::1]:80"), Ok(("::1".into(), 80)));
        assert_eq!(
            parse_host_port("E", "cp.example:443"),
            Ok(("cp.example".into(), 443))
        );
        assert!(parse_host_port("E", "nope").is_err());
        assert!(parse_host_port("E", "bad host:1").is_err());
        assert!(parse_host_port("E", "::1:80").is_err());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = EnvMap::from_pairs([("A", ""), ("B", "x")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B").as_deref(), Some("x"));
    }
}
