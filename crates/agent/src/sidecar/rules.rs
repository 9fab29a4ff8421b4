//! The iptables rules of App Mesh's proxy-route-manager (`envoy-compat.md` §2.4) as data: a
//! pure plan of `iptables`/`ip6tables` argument lists, applied by [`super::apply`].

use std::net::IpAddr;

use super::super::envoy::env::{Problems, Strings, parse_bool, parse_port, parse_u64_in};

/// The nat chain that redirects outbound TCP to Envoy's egress listener.
pub const EGRESS_CHAIN: &str = "APPMESH_EGRESS";
/// The nat chain that redirects inbound TCP on the application ports to the ingress listener.
pub const INGRESS_CHAIN: &str = "APPMESH_INGRESS";
/// SSH is never intercepted (App Mesh always appends 22 to the ignored ports).
pub const ALWAYS_IGNORED_PORT: u16 = 22;
/// iptables' multiport match takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// Flags of `sidecar init` / `sidecar clean` (each falls back to the App Mesh variable).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct InterceptArgs {
    /// The proxy's uid, exempt from interception. [env: APPMESH_IGNORE_UID; default 1337]
    #[arg(long)]
    pub ignore_uid: Option<u32>,
    /// The proxy's gid, exempt from interception. [env: APPMESH_IGNORE_GID]
    #[arg(long)]
    pub ignore_gid: Option<u32>,
    /// Envoy's egress listener port. [env: APPMESH_ENVOY_EGRESS_PORT; default 15001]
    #[arg(long)]
    pub egress_port: Option<u16>,
    /// Envoy's ingress listener port. [env: APPMESH_ENVOY_INGRESS_PORT; default 15000]
    #[arg(long)]
    pub ingress_port: Option<u16>,
    /// Application ports whose inbound TCP goes to the ingress listener, comma-separated.
    /// [env: APPMESH_APP_PORTS]
    #[arg(long)]
    pub app_ports: Option<String>,
    /// Outbound destination ports that bypass Envoy, comma-separated (22 is always added).
    /// [env: APPMESH_EGRESS_IGNORED_PORTS]
    #[arg(long)]
    pub egress_ignored_ports: Option<String>,
    /// Outbound destination IPs or CIDRs that bypass Envoy, comma-separated.
    /// [env: APPMESH_EGRESS_IGNORED_IP]
    #[arg(long)]
    pub egress_ignored_ip: Option<String>,
    /// Also program ip6tables. [env: APPMESH_ENABLE_IPV6; default 0]
    #[arg(long)]
    pub enable_ipv6: Option<bool>,
}

/// Resolved interception settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptConfig {
    pub ignore_uid: u32,
    pub ignore_gid: Option<u32>,
    pub egress_port: u16,
    pub ingress_port: u16,
    pub app_ports: Vec<u16>,
    pub ignored_ports: Vec<u16>,
    pub ignored_ips: Vec<String>,
    pub ipv6: bool,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

// === impl InterceptConfig ===

impl InterceptConfig {
    /// Resolves flags, then variables, then App Mesh defaults; reports every problem.
    pub fn resolve(args: &InterceptArgs, env: &dyn Strings) -> anyhow::Result<InterceptConfig> {
        let mut p = Problems::default();
        let num = |flag: Option<u32>, var: &str, lo: u64, hi: u64, p: &mut Problems| {
            flag.map(u64::from).or_else(|| {
                env.get(var)
                    .and_then(|v| parse_u64_in(var, &v, lo, hi).map_err(|e| p.push(e)).ok())
            })
        };
        let ignore_uid = num(
            args.ignore_uid,
            "APPMESH_IGNORE_UID",
            0,
            u32::MAX as u64,
            &mut p,
        )
        .unwrap_or(1337) as u32;
        let ignore_gid = num(
            args.ignore_gid,
            "APPMESH_IGNORE_GID",
            0,
            u32::MAX as u64,
            &mut p,
        )
        .map(|g| g as u32);
        let port = |flag: Option<u16>, var: &str, default: u16, p: &mut Problems| match flag {
            Some(0) => {
                p.push(format!("{var}: port 0 is out of range 1..65535"));
                default
            }
            Some(v) => v,
            None => env
                .get(var)
                .and_then(|v| parse_port(var, &v).map_err(|e| p.push(e)).ok())
                .unwrap_or(default),
        };
        let egress_port = port(args.egress_port, "APPMESH_ENVOY_EGRESS_PORT", 15001, &mut p);
        let ingress_port = port(
            args.ingress_port,
            "APPMESH_ENVOY_INGRESS_PORT",
            15000,
            &mut p,
        );
        let list = |flag: &Option<String>, var: &str| flag.clone().or_else(|| env.get(var));
        let ports = |raw: Option<String>, var: &str, p: &mut Problems| -> Vec<u16> {
            let mut out = vec![];
            for item in raw.iter().flat_map(|r| r.split(',')).map(str::trim) {
                if item.is_empty() {
                    continue;
                }
                if let Ok(n) = parse_port(var, item).map_err(|e| p.push(e))
                    && !out.contains(&n)
                {
                    out.push(n);
                }
            }
            out
        };
        let app_ports = ports(
            list(&args.app_ports, "APPMESH_APP_PORTS"),
            "APPMESH_APP_PORTS",
            &mut p,
        );
        let mut ignored_ports = ports(
            list(&args.egress_ignored_ports, "APPMESH_EGRESS_IGNORED_PORTS"),
            "APPMESH_EGRESS_IGNORED_PORTS",
            &mut p,
        );
        if !ignored_ports.contains(&ALWAYS_IGNORED_PORT) {
            ignored_ports.push(ALWAYS_IGNORED_PORT);
        }
        let mut ignored_ips = vec![];
        for item in list(&args.egress_ignored_ip, "APPMESH_EGRESS_IGNORED_IP")
            .iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if ip_family(item).is_some() {
                ignored_ips.push(item.to_owned());
            } else {
                p.push(format!(
                    "APPMESH_EGRESS_IGNORED_IP: `{item}` is not an IP address or CIDR"
                ));
            }
        }
        let ipv6 = match args.enable_ipv6 {
            Some(b) => b,
            None => env
                .get("APPMESH_ENABLE_IPV6")
                .and_then(|v| {
                    parse_bool("APPMESH_ENABLE_IPV6", &v)
                        .map_err(|e| p.push(e))
                        .ok()
                })
                .unwrap_or(false),
        };
        if app_ports.contains(&ingress_port) || app_ports.contains(&egress_port) {
            p.push("APPMESH_APP_PORTS: must not contain Envoy's ingress or egress port");
        }
        p.into_result()?;
        Ok(InterceptConfig {
            ignore_uid,
            ignore_gid,
            egress_port,
            ingress_port,
            app_ports,
            ignored_ports,
            ignored_ips,
            ipv6,
        })
    }

    /// The families to program.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The rules of our two chains (appended after the chains are created and flushed).
    pub fn chain_rules(&self, family: Family) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = vec![];
        let mut rule = |chain: &str, rest: &[&str]| {
            let mut r = vec!["-t".to_owned(), "nat".into(), "-A".into(), chain.into()];
            r.extend(rest.iter().map(|s| s.to_string()));
            out.push(r);
        };
        let uid = self.ignore_uid.to_string();
        rule(
            EGRESS_CHAIN,
            &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
        );
        if let Some(g) = self.ignore_gid {
            rule(
                EGRESS_CHAIN,
                &["-m", "owner", "--gid-owner", &g.to_string(), "-j", "RETURN"],
            );
        }
        for chunk in self.ignored_ports.chunks(MULTIPORT_MAX) {
            let ports = join(chunk);
            rule(
                EGRESS_CHAIN,
                &[
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-j",
                    "RETURN",
                ],
            );
        }
        let loopback = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        };
        rule(EGRESS_CHAIN, &["-d", loopback, "-j", "RETURN"]);
        for ip in self
            .ignored_ips
            .iter()
            .filter(|ip| ip_family(ip) == Some(family))
        {
            rule(EGRESS_CHAIN, &["-d", ip, "-j", "RETURN"]);
        }
        let egress = self.egress_port.to_string();
        rule(
            EGRESS_CHAIN,
            &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &egress],
        );
        let ingress = self.ingress_port.to_string();
        for chunk in self.app_ports.chunks(MULTIPORT_MAX) {
            let ports = join(chunk);
            rule(
                INGRESS_CHAIN,
                &[
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &ingress,
                ],
            );
        }
        out
    }
}

/// The rules hooking our chains into the built-in ones, without `-A`/`-C`/`-D` (the caller adds
/// the operation): `(table, chain, match-and-target)`.
pub fn hook_rules() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "nat",
            "OUTPUT",
            vec![
                "-p",
                "tcp",
                "-m",
                "addrtype",
                "!",
                "--dst-type",
                "LOCAL",
                "-j",
                EGRESS_CHAIN,
            ],
        ),
        (
            "nat",
            "PREROUTING",
            vec![
                "-p",
                "tcp",
                "-m",
                "addrtype",
                "!",
                "--src-type",
                "LOCAL",
                "-j",
                INGRESS_CHAIN,
            ],
        ),
    ]
}

/// The binary for a family.
pub fn binary(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Which family an IP or CIDR belongs to, if it is one.
fn ip_family(s: &str) -> Option<Family> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(len) = len {
        let n: u8 = len.parse().ok()?;
        if n > max {
            return None;
        }
    }
    Some(if ip.is_ipv4() { Family::V4 } else { Family::V6 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::env::EnvMap;

    #[test]
    fn defaults_follow_proxy_route_manager() {
        let c = InterceptConfig::resolve(&InterceptArgs::default(), &EnvMap::default()).unwrap();
        assert_eq!(c.ignore_uid, 1337);
        assert_eq!((c.ingress_port, c.egress_port), (15000, 15001));
        assert_eq!(c.ignored_ports, vec![22]);
        assert!(!c.ipv6);
        let rules: Vec<String> = c
            .chain_rules(Family::V4)
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert_eq!(
            rules,
            vec![
                "-t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
                "-t nat -A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN",
                "-t nat -A APPMESH_EGRESS -d 127.0.0.0/8 -j RETURN",
                "-t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001",
            ]
        );
    }

    #[test]
    fn variables_and_flags() {
        let env = EnvMap::from_pairs([
            ("APPMESH_IGNORE_UID", "1500"),
            ("APPMESH_IGNORE_GID", "1501"),
            ("APPMESH_APP_PORTS", "8080, 9090"),
            ("APPMESH_EGRESS_IGNORED_PORTS", "3306,22"),
            ("APPMESH_EGRESS_IGNORED_IP", "169.254.169.254,fd00::/8"),
            ("APPMESH_ENABLE_IPV6", "1"),
            ("APPMESH_ENVOY_EGRESS_PORT", "16001"),
        ]);
        let args = InterceptArgs {
            ingress_port: Some(16000),
            ..Default::default()
        };
        let c = InterceptConfig::resolve(&args, &env).unwrap();
        assert_eq!(c.families(), vec![Family::V4, Family::V6]);
        let v4 = c
            .chain_rules(Family::V4)
            .iter()
            .map(|r| r.join(" "))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(v4.contains("--uid-owner 1500"), "{v4}");
        assert!(v4.contains("--gid-owner 1501"), "{v4}");
        assert!(v4.contains("--dports 3306,22 -j RETURN"), "{v4}");
        assert!(v4.contains("-d 169.254.169.254 -j RETURN"), "{v4}");
        assert!(!v4.contains("fd00::/8"), "{v4}");
        assert!(v4.contains("REDIRECT --to-ports 16001"), "{v4}");
        assert!(v4.contains("APPMESH_INGRESS -p tcp -m multiport --dports 8080,9090 -j REDIRECT --to-ports 16000"), "{v4}");
        let v6 = c
            .chain_rules(Family::V6)
            .iter()
            .map(|r| r.join(" "))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(v6.contains("-d fd00::/8 -j RETURN"), "{v6}");
        assert!(v6.contains("-d ::1/128 -j RETURN"), "{v6}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = EnvMap::from_pairs([
            ("APPMESH_IGNORE_UID", "root"),
            ("APPMESH_APP_PORTS", "8080,99999"),
            ("APPMESH_EGRESS_IGNORED_PORTS", "ssh"),
            ("APPMESH_EGRESS_IGNORED_IP", "10.0.0.0/40"),
            ("APPMESH_ENABLE_IPV6", "maybe"),
            ("APPMESH_ENVOY_INGRESS_PORT", "0"),
        ]);
        let e = InterceptConfig::resolve(&InterceptArgs::default(), &env)
            .unwrap_err()
            .to_string();
        for var in [
            "APPMESH_IGNORE_UID",
            "APPMESH_APP_PORTS",
            "APPMESH_EGRESS_IGNORED_PORTS",
            "APPMESH_EGRESS_IGNORED_IP",
            "APPMESH_ENABLE_IPV6",
            "APPMESH_ENVOY_INGRESS_PORT",
        ] {
            assert!(e.contains(var), "{var} missing: {e}");
        }
    }

    #[test]
    fn many_ports_are_chunked() {
        let ports: Vec<String> = (1000..1020).map(|p| p.to_string()).collect();
        let args = InterceptArgs {
            app_ports: Some(ports.join(",")),
            ..Default::default()
        };
        let c = InterceptConfig::resolve(&args, &EnvMap::default()).unwrap();
        let ingress = c
            .chain_rules(Family::V4)
            .into_iter()
            .filter(|r| r[3] == INGRESS_CHAIN)
            .count();
        assert_eq!(ingress, 2);
    }
}
