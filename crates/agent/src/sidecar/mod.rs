//! `meshplane sidecar init` / `sidecar clean`: transparent interception with iptables, as App
//! Mesh's proxy-route-manager does it (`envoy-compat.md` §2.4).
//!
//! ```text
//!  app (any uid but the proxy's) ──tcp──▶ nat OUTPUT ─▶ APPMESH_EGRESS ─REDIRECT─▶ :15001 (egress)
//!      proxy uid, ignored ports/IPs, loopback ─RETURN─▶ (untouched)
//!  peer ──tcp app port──▶ nat PREROUTING ─▶ APPMESH_INGRESS ─REDIRECT─▶ :15000 (ingress)
//! ```
//!
//! `init` is idempotent (our chains are flushed and rebuilt; hooks are checked with `-C` before
//! `-A`) and `clean` removes every rule and chain `init` made, and is safe to run twice.

pub mod netns;
pub mod rules;

use std::process::{Command, ExitCode, Output};

use anyhow::Context;
use clap::Subcommand;

use crate::envoy::env::{ProcessEnv, Strings};
use rules::{
    EGRESS_CHAIN, Family, INGRESS_CHAIN, InterceptArgs, InterceptConfig, binary, hook_rules,
};

/// Traffic interception verbs.
#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Redirect the application's TCP through Envoy (nat chains APPMESH_INGRESS and
    /// APPMESH_EGRESS). Idempotent.
    Init(InterceptArgs),
    /// Remove every rule and chain `init` created. Safe to run twice.
    Clean(InterceptArgs),
}

impl SidecarCommand {
    /// Runs the verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            SidecarCommand::Init(args) => {
                let cfg = InterceptConfig::resolve(&args, &ProcessEnv)?;
                init(&cfg)?;
                eprintln!(
                    "interception on: egress tcp -> :{} (except uid {}, ports {:?}), inbound {:?} -> :{}",
                    cfg.egress_port,
                    cfg.ignore_uid,
                    cfg.ignored_ports,
                    cfg.app_ports,
                    cfg.ingress_port
                );
            }
            SidecarCommand::Clean(args) => {
                let env: &dyn Strings = &ProcessEnv;
                let cfg = InterceptConfig::resolve(&args, env)?;
                clean(cfg.ipv6)?;
                eprintln!("interception off");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Installs (or re-installs) the interception rules.
pub fn init(cfg: &InterceptConfig) -> anyhow::Result<()> {
    for family in cfg.families() {
        for chain in [EGRESS_CHAIN, INGRESS_CHAIN] {
            if !chain_exists(family, chain)? {
                ipt_ok(family, &["-t", "nat", "-N", chain])?;
            }
            ipt_ok(family, &["-t", "nat", "-F", chain])?;
        }
        for rule in cfg.chain_rules(family) {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            ipt_ok(family, &args)?;
        }
        for (table, chain, spec) in hook_rules() {
            if !hook_present(family, table, chain, &spec)? {
                let mut args = vec!["-t", table, "-A", chain];
                args.extend(&spec);
                ipt_ok(family, &args)?;
            }
        }
    }
    Ok(())
}

/// Removes the hooks and chains `init` made. IPv6 is cleaned when `ipv6` is set or when
/// ip6tables works (rules may have been made by an earlier `init --enable-ipv6`).
pub fn clean(ipv6: bool) -> anyhow::Result<()> {
    clean_family(Family::V4)?;
    match clean_family(Family::V6) {
        Ok(()) => Ok(()),
        Err(e) if ipv6 => Err(e),
        Err(_) => Ok(()),
    }
}

fn clean_family(family: Family) -> anyhow::Result<()> {
    for (table, chain, spec) in hook_rules() {
        // A hook could have been added more than once by hand; remove every copy.
        for _ in 0..64 {
            if !hook_present(family, table, chain, &spec)? {
                break;
            }
            let mut args = vec!["-t", table, "-D", chain];
            args.extend(&spec);
            ipt_ok(family, &args)?;
        }
    }
    for chain in [EGRESS_CHAIN, INGRESS_CHAIN] {
        if chain_exists(family, chain)? {
            ipt_ok(family, &["-t", "nat", "-F", chain])?;
            ipt_ok(family, &["-t", "nat", "-X", chain])?;
        }
    }
    Ok(())
}

fn ipt(family: Family, args: &[&str]) -> anyhow::Result<Output> {
    let bin = binary(family);
    Command::new(bin)
        .arg("-w")
        .args(args)
        .output()
        .with_context(|| {
            format!("run {bin}: is it installed? (Debian: apt-get install -y iptables)")
        })
}

fn ipt_ok(family: Family, args: &[&str]) -> anyhow::Result<()> {
    let out = ipt(family, args)?;
    anyhow::ensure!(
        out.status.success(),
        "{} {} failed: {}",
        binary(family),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn chain_exists(family: Family, chain: &str) -> anyhow::Result<bool> {
    // `-S <chain>` on a missing chain gives odd errors under the nft backend ("incompatible"),
    // so list the whole table and look for the chain's `-N` line.
    let out = ipt(family, &["-t", "nat", "-S"])?;
    anyhow::ensure!(
        out.status.success(),
        "{} -t nat -S failed: {}",
        binary(family),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let want = format!("-N {chain}");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == want))
}

fn hook_present(family: Family, table: &str, chain: &str, spec: &[&str]) -> anyhow::Result<bool> {
    // The hook jumps to one of our chains (the last word); without it there is no hook, and
    // `-C` would fail with an error rather than "no such rule".
    if let Some(target) = spec.last()
        && !chain_exists(family, target)?
    {
        return Ok(false);
    }
    let mut args = vec!["-t", table, "-C", chain];
    args.extend(spec);
    let out = ipt(family, &args)?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // `-C` exits 1 ("Bad rule (does a matching rule exist in that chain?)") when absent.
    if out.status.code() == Some(1) {
        return Ok(false);
    }
    anyhow::bail!(
        "{} {} failed: {}",
        binary(family),
        args.join(" "),
        err.trim()
    )
}
