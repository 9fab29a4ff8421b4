//! `meshplane access-keys create | list | delete | rotate`: meshplane-issued SigV4 keys.
//!
//! A secret is printed exactly once, by `create` and `rotate`, with the blocks to paste into
//! `~/.aws/credentials` and `~/.aws/config`. `create` checks the policy file locally with the
//! server's own parser first, so a malformed policy is reported with the path of the offending
//! element before anything is sent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use meshplane_client::{Client, Settings};
use serde_json::Value;

use crate::ConnectArgs;

/// The longest rotation grace the server accepts (`graceSeconds` 0..86400).
const MAX_GRACE: Duration = Duration::from_secs(86_400);

/// `access-keys`.
#[derive(Debug, Args)]
pub struct AccessKeysArgs {
    #[command(subcommand)]
    pub command: AccessKeysCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The access-key verbs.
#[derive(Debug, Subcommand)]
pub enum AccessKeysCommand {
    /// Create a key with an IAM-style policy; prints its secret once.
    Create {
        /// A unique name for the key (also the suggested profile name).
        #[arg(long)]
        name: String,
        /// The policy document (JSON: Version, Statement[] with Effect, Action, Resource).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// Output: the credential blocks, or the server's JSON answer.
        #[arg(short = 'o', long, value_enum, default_value_t = KeyOutput::Text)]
        output: KeyOutput,
    },
    /// List the keys (never their secrets).
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Table)]
        output: ListOutput,
    },
    /// Delete a key; its node tokens are revoked and its Envoys disconnected.
    Delete {
        /// The key's name.
        name: String,
    },
    /// Give a key a new secret (same id); prints it once.
    Rotate {
        /// The key's name.
        name: String,
        /// How long the old secret keeps working (at most 24h).
        #[arg(long, default_value = "0s", value_parser = parse_grace)]
        grace: Duration,
        /// Output: the credential blocks, or the server's JSON answer.
        #[arg(short = 'o', long, value_enum, default_value_t = KeyOutput::Text)]
        output: KeyOutput,
    },
}

/// Output of `create` and `rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyOutput {
    /// A summary and ready `[NAME]` / `[profile NAME]` blocks.
    Text,
    /// The JSON answer (with the secret).
    Json,
}

/// Output of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    /// Aligned columns.
    Table,
    /// The JSON answer.
    Json,
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    let d = meshplane_client::config::parse_duration(text)?;
    if d > MAX_GRACE {
        return Err(format!("grace `{text}` is longer than 24h"));
    }
    Ok(d)
}

/// Reads and validates a policy file with `meshplane_policy::Policy::parse`; the error names
/// the file and every offending element's JSON path.
pub fn load_policy(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    if let Err(e) = meshplane_policy::Policy::parse(&text) {
        let lines: Vec<String> = e.problems.iter().map(|p| format!("  {p}")).collect();
        bail!(
            "the policy in {} is not valid:\n{}",
            path.display(),
            lines.join("\n")
        );
    }
    serde_json::from_str(&text).context("the policy is not JSON")
}

/// Runs an access-key verb.
pub async fn run(args: AccessKeysArgs) -> anyhow::Result<ExitCode> {
    // The policy is checked before anything else, even before the credentials are read.
    let policy = match &args.command {
        AccessKeysCommand::Create { policy, .. } => Some(load_policy(policy)?),
        _ => None,
    };
    let settings = args.connect.settings()?;
    let client = Client::from_settings(&settings)?;
    match args.command {
        AccessKeysCommand::Create { name, output, .. } => {
            let policy = policy.unwrap_or_default();
            let answer = client.create_access_key(&name, policy).await?;
            print_secret(&answer, &name, output, &settings, "created");
        }
        AccessKeysCommand::List { output } => {
            let answer = client.list_access_keys().await?;
            match output {
                ListOutput::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                ListOutput::Table => print!("{}", table(&answer)),
            }
        }
        AccessKeysCommand::Delete { name } => {
            let answer = client.delete_access_key(&name).await?;
            println!(
                "deleted access key {name} ({})",
                answer["accessKeyId"].as_str().unwrap_or("?")
            );
        }
        AccessKeysCommand::Rotate {
            name,
            grace,
            output,
        } => {
            let answer = client.rotate_access_key(&name, grace.as_secs()).await?;
            let verb = if grace.is_zero() {
                "rotated (the old secret no longer works)".to_owned()
            } else {
                format!(
                    "rotated (the old secret works for {}s more)",
                    grace.as_secs()
                )
            };
            print_secret(&answer, &name, output, &settings, &verb);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_secret(answer: &Value, name: &str, output: KeyOutput, settings: &Settings, verb: &str) {
    if output == KeyOutput::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
        return;
    }
    print!("{}", secret_text(answer, name, settings, verb));
}

/// The text `create`/`rotate` print: a summary, then the blocks for the AWS files.
pub fn secret_text(answer: &Value, name: &str, settings: &Settings, verb: &str) -> String {
    let id = answer["accessKeyId"].as_str().unwrap_or("?");
    let secret = answer["secretAccessKey"].as_str().unwrap_or("?");
    let mut out = format!(
        "access key {name} ({id}) {verb}\n\
         the secret is shown only now; keep it like a password\n\n\
         # ~/.aws/credentials\n[{name}]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n\n\
         # ~/.aws/config\n[profile {name}]\nregion = {}\nendpoint_url = {}\n",
        settings.region, settings.endpoint
    );
    if let Some(ca) = &settings.ca_bundle {
        out.push_str(&format!("ca_bundle = {}\n", ca.display()));
    }
    out.push_str(&format!(
        "\nthen: AWS_PROFILE={name} aws appmesh list-meshes  (or meshplane --profile {name} get meshes)\n"
    ));
    out
}

fn table(answer: &Value) -> String {
    let empty = Vec::new();
    let keys = answer["accessKeys"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "NAME".to_owned(),
        "ACCESS KEY ID".to_owned(),
        "CREATED".to_owned(),
    ]];
    for k in keys {
        rows.push([
            k["name"].as_str().unwrap_or("").to_owned(),
            k["accessKeyId"].as_str().unwrap_or("").to_owned(),
            k["createdAt"]
                .as_f64()
                .map(|t| utc(t as i64))
                .unwrap_or_default(),
        ]);
    }
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    rows.iter()
        .map(|r| format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]))
        .collect()
}

/// Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, days-to-civil).
pub(crate) fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_epoch_seconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_554_800), "2026-12-06T11:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn grace_is_at_most_a_day() {
        assert_eq!(parse_grace("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_grace("24h"), Ok(MAX_GRACE));
        assert!(parse_grace("25h").unwrap_err().contains("longer than 24h"));
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn the_secret_text_has_both_profile_blocks() {
        let settings = Settings {
            endpoint: "https://cp:7080".into(),
            credentials: None,
            region: "eu-west-1".into(),
            ca_bundle: Some("/data/ca.pem".into()),
            profile: "default".into(),
        };
        let answer = serde_json::json!({"accessKeyId": "MPAKX", "secretAccessKey": "S"});
        let text = secret_text(&answer, "ci", &settings, "created");
        assert!(text.contains("[ci]\naws_access_key_id = MPAKX\naws_secret_access_key = S\n"));
        assert!(text.contains(
            "[profile ci]\nregion = eu-west-1\nendpoint_url = https://cp:7080\nca_bundle = /data/ca.pem\n"
        ));
    }
}
