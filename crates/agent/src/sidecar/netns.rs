//! Network namespaces for multi-host tests and the demo: a bridge in the root namespace, one
//! namespace per workload joined to it by a veth pair, addresses in a private range that exist
//! only on those interfaces, and a per-namespace hosts file (`/etc/netns/<ns>/hosts`, which
//! `ip netns exec` bind-mounts over `/etc/hosts`, with a `resolv.conf` that fails fast). Everything is removed on drop, also when a
//! test panics.
//!
//! ```text
//!   root ns:  mp<id>br (10.<a>.<b>.1/24)
//!               ├── mp<id>v1 ══ veth ══ eth0 (10.<a>.<b>.10)  in netns mp-<id>-front
//!               └── mp<id>v2 ══ veth ══ eth0 (10.<a>.<b>.11)  in netns mp-<id>-red
//! ```
//! Names start with `mp` so leftovers are easy to spot (`ip netns list`, `ip link`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::Context;

/// One namespace of a [`Network`].
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace name (`mp-<id>-<name>`).
    pub netns: String,
    /// The short name given to [`Network::add_host`].
    pub name: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    host_veth: String,
}

/// A bridge plus namespaces; dropping it deletes everything it created.
#[derive(Debug)]
pub struct Network {
    id: String,
    bridge: String,
    subnet: [u8; 3],
    hosts: Vec<Host>,
    names: Vec<(String, Ipv4Addr)>,
    bridge_up: bool,
}

// === impl Network ===

impl Network {
    /// Creates the bridge `mp<id>br` with `10.<a>.<b>.1/24` in the root namespace. The /24 is
    /// picked at random in 10.200.0.0/13 to keep parallel tests apart.
    pub fn new() -> anyhow::Result<Network> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0) as u64
            ^ (u64::from(std::process::id()) << 20);
        let id = format!("{:06x}", (seed ^ (seed >> 29)) & 0xff_ffff);
        let a = 200 + ((seed >> 8) % 8) as u8;
        let b = (seed >> 16) as u8;
        let mut net = Network {
            bridge: format!("mp{id}br"),
            id,
            subnet: [10, a, b],
            hosts: vec![],
            names: vec![],
            bridge_up: false,
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        net.bridge_up = true;
        let gw = format!("{}/24", net.gateway());
        ip(&["addr", "add", &gw, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The short id in every name this network made.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bridge's address in the root namespace (reachable from every host).
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// An address in the subnet that no interface has (for virtual service names: traffic to
    /// it only works when intercepted).
    pub fn unassigned(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }

    /// Adds a namespace joined to the bridge, with loopback up and a default route via the
    /// bridge.
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        let n = self.hosts.len() + 1;
        anyhow::ensure!(n < 200, "too many hosts");
        let [a, b, c] = self.subnet;
        let ip_addr = Ipv4Addr::new(a, b, c, 9 + n as u8);
        let netns = format!("mp-{}-{name}", self.id);
        let host_veth = format!("mp{}v{n}", self.id);
        let peer = format!("mp{}p{n}", self.id);
        ip(&["netns", "add", &netns])?;
        // Record the host before anything else can fail so Drop removes it.
        let host = Host {
            netns: netns.clone(),
            name: name.to_owned(),
            ip: ip_addr,
            host_veth: host_veth.clone(),
        };
        self.hosts.push(host.clone());
        std::fs::create_dir_all(self.etc_dir(&netns))?;
        std::fs::write(self.etc_dir(&netns).join("hosts"), self.hosts_file())?;
        // No DNS server is reachable from inside: make lookups of unknown names fail at once
        // (loopback refuses) instead of timing out against the host's resolver.
        std::fs::write(
            self.etc_dir(&netns).join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &host_veth, "master", &self.bridge])?;
        ip(&["link", "set", &host_veth, "up"])?;
        ip(&["link", "set", &peer, "netns", &netns])?;
        let cidr = format!("{ip_addr}/24");
        let gw = self.gateway().to_string();
        for args in [
            vec!["link", "set", &peer, "name", "eth0"],
            vec!["addr", "add", &cidr, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &gw],
        ] {
            let mut full = vec!["-n", &netns];
            full.extend(args);
            ip(&full)?;
        }
        self.names.push((format!("{name}.local"), ip_addr));
        self.write_hosts()?;
        Ok(host)
    }

    /// Makes `name` resolve to `ip` in every namespace (now and later).
    pub fn add_name(&mut self, name: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        self.names.push((name.to_owned(), ip));
        self.write_hosts()
    }

    /// The hosts of this network.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    fn etc_dir(&self, netns: &str) -> PathBuf {
        PathBuf::from("/etc/netns").join(netns)
    }

    fn hosts_file(&self) -> String {
        let mut s = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, ip) in &self.names {
            s.push_str(&format!("{ip} {name}\n"));
        }
        s
    }

    fn write_hosts(&self) -> anyhow::Result<()> {
        let text = self.hosts_file();
        for h in &self.hosts {
            std::fs::write(self.etc_dir(&h.netns).join("hosts"), &text)?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for h in self.hosts.drain(..).rev() {
            // Killing stragglers first: a namespace with live processes lingers after delete.
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &h.netns])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["link", "del", &h.host_veth])
                .output();
            let _ = Command::new("ip").args(["netns", "del", &h.netns]).output();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&h.netns));
        }
        if self.bridge_up {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
        }
    }
}

// === impl Host ===

impl Host {
    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// Runs `program args` inside the namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.command(program)
            .args(args)
            .output()
            .with_context(|| format!("run {program} in {}", self.netns))
    }
}

/// Whether this process can create namespaces (root with `ip` available).
pub fn available() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        && std::fs::metadata("/proc/self")
            .map(|_| is_root())
            .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (Debian: apt-get install -y iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Names of leftover interfaces and namespaces that contain `id` (for cleanup tests).
pub fn leftovers(id: &str) -> Vec<String> {
    let mut out = vec![];
    for args in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
        if let Ok(o) = Command::new("ip").args(args).output() {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if line.contains(id) {
                    out.push(line.to_owned());
                }
            }
        }
    }
    if PathBuf::from("/etc/netns").exists()
        && let Ok(rd) = std::fs::read_dir("/etc/netns")
    {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.contains(id) {
                out.push(format!("/etc/netns/{n}"));
            }
        }
    }
    out
}
