//! `meshplane proxy-status` and `meshplane proxy-config NODE`: what the control plane sent
//! to each Envoy, what Envoy accepted, and the exact resources it serves to a node.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;

/// Flags shared by both verbs: the endpoint and how to sign (see [`crate::ConnectArgs`]).
pub type EndpointArg = crate::ConnectArgs;

/// `meshplane proxy-status`.
#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    #[command(flatten)]
    pub endpoint: EndpointArg,
    /// Only proxies of this mesh.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// `meshplane proxy-config NODE`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    #[command(flatten)]
    pub endpoint: EndpointArg,
    /// Node id (`mesh/<mesh>/virtualNode/<name>`, `mesh/<mesh>/virtualGateway/<name>`, or an
    /// App Mesh ARN).
    pub node: String,
    /// Only this xDS type.
    #[arg(long, value_parser = ["cds", "eds", "lds", "rds", "sds"])]
    pub r#type: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "yaml", value_parser = ["yaml", "json"])]
    pub output: String,
}

/// A signed GET of one of meshplane's JSON endpoints.
fn fetch(
    connect: &EndpointArg,
    path: &str,
    query: Vec<(&'static str, String)>,
) -> anyhow::Result<Value> {
    let client = connect.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        client
            .get_json(path, query)
            .await
            .with_context(|| format!("GET {}{path}", client.endpoint()))
    })
}

fn ago(epoch_secs: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let s = (now - epoch_secs).max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// `SYNCED` (acked what was sent), `NACKED` (rejected the current version), `SENT` (not
/// acked yet), `-` (not subscribed).
fn type_state(t: Option<&Value>) -> &'static str {
    let Some(t) = t else { return "-" };
    let sent = t["sentVersion"].as_str();
    if t["lastNack"]["version"]
        .as_str()
        .is_some_and(|v| Some(v) == sent)
    {
        "NACKED"
    } else if t["inSync"].as_bool() == Some(true) {
        "SYNCED"
    } else if sent.is_some() {
        "SENT"
    } else {
        "-"
    }
}

/// Runs `proxy-status`.
pub fn status(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let body = fetch(&args.endpoint, "/meshplane/v1/proxy-status", vec![])?;
    let proxies: Vec<&Value> = body["proxies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| match &args.mesh {
                    Some(m) => p["node"].as_str().is_some_and(|n| {
                        n.starts_with(&format!("mesh/{m}/")) || n.contains(&format!(":mesh/{m}/"))
                    }),
                    None => true,
                })
                .collect()
        })
        .unwrap_or_default();
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&proxies)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "NODE",
            "FLAVOR",
            "AGE",
            "CDS",
            "EDS",
            "LDS",
            "RDS",
            "TOKEN",
            "LAST NACK",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &proxies {
        let types = p["types"].as_array().cloned().unwrap_or_default();
        let get = |ty: &str| types.iter().find(|t| t["type"] == ty);
        let last_nack = types
            .iter()
            .filter_map(|t| Some((t["type"].as_str()?, t.get("lastNack")?)))
            .max_by(|a, b| {
                a.1["at"]
                    .as_f64()
                    .partial_cmp(&b.1["at"].as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(ty, n)| {
                format!(
                    "{ty}: {}",
                    n["message"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                )
            })
            .unwrap_or_default();
        rows.push(vec![
            p["node"].as_str().unwrap_or("").to_owned(),
            p["flavor"].as_str().unwrap_or("").to_owned(),
            ago(p["connectedAt"].as_f64().unwrap_or(0.0)),
            type_state(get("cds")).into(),
            type_state(get("eds")).into(),
            type_state(get("lds")).into(),
            type_state(get("rds")).into(),
            // The token the stream authenticated with (what `node-tokens revoke` takes);
            // `-` when the control plane runs without authentication.
            p["tokenId"].as_str().unwrap_or("-").to_owned(),
            last_nack,
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Runs `proxy-config`.
pub fn config(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let node = meshplane_model::NodeId::parse(&args.node)?;
    let mut body = fetch(
        &args.endpoint,
        "/meshplane/v1/proxy-config",
        vec![("node", node.to_string())],
    )?;
    if let Some(t) = &args.r#type {
        let only = body["resources"][t.as_str()].take();
        body["resources"] = serde_json::json!({ t.as_str(): only });
    }
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&body)?),
        _ => print!("{}", yaml_serde::to_string(&body)?),
    }
    Ok(ExitCode::SUCCESS)
}
