//! Where the client's credentials, region, endpoint and CA bundle come from: the AWS
//! credential chain and shared config files, resolved the way the AWS CLI and SDKs do.
//!
//! ```text
//!   credentials  explicit --profile ? profile : env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
//!                then profile (AWS_PROFILE, else `default`) in AWS_SHARED_CREDENTIALS_FILE
//!                (~/.aws/credentials), then in AWS_CONFIG_FILE (~/.aws/config)
//!   region       --region, AWS_REGION, AWS_DEFAULT_REGION, profile `region`, us-east-1
//!   endpoint     --endpoint / MESHPLANE_ENDPOINT, AWS_ENDPOINT_URL_APP_MESH, AWS_ENDPOINT_URL,
//!                profile `endpoint_url`, http://127.0.0.1:7080
//!   CA bundle    --ca-bundle / MESHPLANE_CA_BUNDLE, AWS_CA_BUNDLE, profile `ca_bundle`
//! ```
//!
//! The INI files are parsed here by hand (a few dozen lines) rather than through
//! `aws-config`, which would pull the whole SDK runtime into the CLI. Only what meshplane
//! uses is read: static keys (no `credential_process`, SSO or role assumption; a profile
//! that names one is reported rather than silently treated as unsigned).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use meshplane_auth::sign::Credentials;

/// The region signed into requests when none is configured (`meshplane serve`'s default).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The endpoint when none is configured (the default `serve --api-listen`).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7080";

/// What the command line says, each overriding the environment and the files.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--endpoint` (or `MESHPLANE_ENDPOINT`, read by clap).
    pub endpoint: Option<String>,
    /// `--profile`; when set, environment credentials are ignored (as the AWS CLI does).
    pub profile: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--ca-bundle` (or `MESHPLANE_CA_BUNDLE`, read by clap).
    pub ca_bundle: Option<PathBuf>,
}

/// A resolved client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API base URL.
    pub endpoint: String,
    /// `None`: requests go unsigned (a server with auth on answers
    /// `MissingAuthenticationTokenException`).
    pub credentials: Option<Credentials>,
    /// The region signed into every request.
    pub region: String,
    /// PEM file of the CA certificates trusted for `https://` endpoints.
    pub ca_bundle: Option<PathBuf>,
    /// The profile the values came from, for messages.
    pub profile: String,
}

/// A configuration file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed (other than its absence).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line that is neither a section, a `key = value`, a comment nor blank.
    #[error("{path}:{line}: expected `[section]` or `key = value`")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A profile with only one half of a key pair.
    #[error("profile `{profile}` in {path} has {present} but no {missing}")]
    HalfKey {
        /// The profile.
        profile: String,
        /// The file.
        path: PathBuf,
        /// The key that is there.
        present: &'static str,
        /// The key that is not.
        missing: &'static str,
    },
    /// `--profile` names a profile found in neither file.
    #[error("the config profile ({profile}) could not be found")]
    ProfileNotFound {
        /// The profile.
        profile: String,
    },
}

/// One INI file: section name -> key -> value (keys lower-cased, values trimmed).
type Ini = BTreeMap<String, BTreeMap<String, String>>;

// === impl Settings ===

impl Settings {
    /// Resolves from the process environment and the user's files.
    pub fn from_env(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::resolve(overrides, &|name| std::env::var(name).ok())
    }

    /// Resolves with `env` standing in for the process environment (tests).
    pub fn resolve(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let home = env("HOME").map(PathBuf::from);
        let in_home = |rest: &str| home.as_ref().map(|h| h.join(".aws").join(rest));
        let credentials_path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(expand_tilde(home.as_deref()))
            .or_else(|| in_home("credentials"));
        let config_path = env("AWS_CONFIG_FILE")
            .map(expand_tilde(home.as_deref()))
            .or_else(|| in_home("config"));
        let credentials_file = read_ini(credentials_path.as_deref())?;
        let config_file = read_ini(config_path.as_deref())?;

        let explicit_profile = overrides.profile.clone().filter(|p| !p.is_empty());
        let profile = explicit_profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_owned());
        let cred_section = credentials_file.get(&profile);
        let config_section = config_file.get(&config_section_name(&profile));
        let from_config = |key: &str| config_section.and_then(|s| s.get(key)).cloned();

        let env_credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) if explicit_profile.is_none() => Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        // A profile someone named (flag or AWS_PROFILE) must exist, as the AWS CLI insists,
        // unless the environment's keys are used anyway; `default` may be absent.
        let named = explicit_profile.is_some() || env("AWS_PROFILE").is_some();
        if named && env_credentials.is_none() && cred_section.is_none() && config_section.is_none()
        {
            return Err(ConfigError::ProfileNotFound { profile });
        }
        let credentials = match env_credentials {
            Some(c) => Some(c),
            None => match section_credentials(cred_section, &profile, credentials_path.as_deref())?
            {
                Some(c) => Some(c),
                None => section_credentials(config_section, &profile, config_path.as_deref())?,
            },
        };

        let region = overrides
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region"))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let endpoint = overrides
            .endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| env("AWS_ENDPOINT_URL_APP_MESH"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| from_config("endpoint_url"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let ca_bundle = overrides
            .ca_bundle
            .clone()
            .or_else(|| env("AWS_CA_BUNDLE").map(PathBuf::from))
            .or_else(|| from_config("ca_bundle").map(expand_tilde(home.as_deref())));
        Ok(Settings {
            endpoint,
            credentials,
            region,
            ca_bundle,
            profile,
        })
    }
}

/// `[default]` stays `default` in the config file; every other profile is `[profile NAME]`.
fn config_section_name(profile: &str) -> String {
    if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    }
}

fn expand_tilde(home: Option<&Path>) -> impl Fn(String) -> PathBuf + '_ {
    move |p: String| match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    }
}

fn section_credentials(
    section: Option<&BTreeMap<String, String>>,
    profile: &str,
    path: Option<&Path>,
) -> Result<Option<Credentials>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let id = section.get("aws_access_key_id").filter(|v| !v.is_empty());
    let secret = section
        .get("aws_secret_access_key")
        .filter(|v| !v.is_empty());
    let half = |present, missing| ConfigError::HalfKey {
        profile: profile.to_owned(),
        path: path.map(Path::to_path_buf).unwrap_or_default(),
        present,
        missing,
    };
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: section
                .get("aws_session_token")
                .filter(|v| !v.is_empty())
                .cloned(),
        })),
        (Some(_), None) => Err(half("aws_access_key_id", "aws_secret_access_key")),
        (None, Some(_)) => Err(half("aws_secret_access_key", "aws_access_key_id")),
        (None, None) => Ok(None),
    }
}

fn read_ini(path: Option<&Path>) -> Result<Ini, ConfigError> {
    let Some(path) = path else {
        return Ok(Ini::new());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => parse_ini(&text).map_err(|line| ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses the AWS INI dialect: `[section]`, `key = value`, `#` and `;` comment lines.
/// Indented lines continue a nested block (`s3 =` / `  max_concurrent_requests = 10`); they
/// are skipped, since no key meshplane reads is nested. Names are trimmed, section names
/// have inner runs of spaces collapsed (`[profile  dev]` is `profile dev`), keys are
/// lower-cased. A later duplicate key wins, as in botocore. Returns the 1-based number of
/// the first line that does not parse.
fn parse_ini(text: &str) -> Result<Ini, usize> {
    let mut ini = Ini::new();
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(inner) = trimmed.strip_prefix('[') {
            let name = inner.strip_suffix(']').ok_or(i + 1)?;
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            ini.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A nested sub-key of the previous `key =`; meshplane reads none of them.
            continue;
        }
        let (key, value) = trimmed.split_once('=').ok_or(i + 1)?;
        let section = current.as_ref().ok_or(i + 1)?;
        ini.entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Ok(ini)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(credentials: &str, config: &str) -> Files {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("credentials"), credentials).unwrap();
            std::fs::write(dir.path().join("config"), config).unwrap();
            Files { dir }
        }

        fn env(&self, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
            let p = |f: &str| self.dir.path().join(f).display().to_string();
            let mut v = vec![
                ("AWS_SHARED_CREDENTIALS_FILE", p("credentials")),
                ("AWS_CONFIG_FILE", p("config")),
                ("HOME", "/nonexistent-home".to_owned()),
            ];
            for (k, val) in extra {
                let k: &'static str = Box::leak(k.to_string().into_boxed_str());
                v.push((k, (*val).to_owned()));
            }
            v
        }
    }

    const CREDS: &str = "\
# comment
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = default/secret+x=

[meshplane]
aws_access_key_id=MPAKAAAAAAAAAAAAAAAA
aws_secret_access_key = mp-secret
aws_session_token = tok
";
    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile  meshplane]
region = us-west-2
endpoint_url = https://127.0.0.1:7443
ca_bundle = /data/ca.pem
s3 =
  max_concurrent_requests = 10
; comment
[profile cfgonly]
aws_access_key_id = CFGKEY
aws_secret_access_key = cfgsecret
";

    fn resolve(o: &Overrides, env: &[(&str, String)]) -> Result<Settings, ConfigError> {
        Settings::resolve(o, &env_of(env))
    }

    #[test]
    fn profile_from_aws_profile_reads_both_files() {
        let f = Files::new(CREDS, CONFIG);
        let s = resolve(
            &Overrides::default(),
            &f.env(&[("AWS_PROFILE", "meshplane")]),
        )
        .unwrap();
        let c = s.credentials.unwrap();
        assert_eq!(c.access_key_id, "MPAKAAAAAAAAAAAAAAAA");
        assert_eq!(c.secret_access_key, "mp-secret");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(s.region, "us-west-2");
        assert_eq!(s.endpoint, "https://127.0.0.1:7443");
        assert_eq!(s.ca_bundle, Some(PathBuf::from("/data/ca.pem")));
    }

    #[test]
    fn default_profile_and_values_with_equals_signs() {
        let f = Files::new(CREDS, CONFIG);
        let s = resolve(&Overrides::default(), &f.env(&[])).unwrap();
        let c = s.credentials.unwrap();
        assert_eq!(c.access_key_id, "DEFAULTKEY");
        assert_eq!(c.secret_access_key, "default/secret+x=");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.ca_bundle, None);
    }

    #[test]
    fn environment_keys_win_unless_a_profile_is_explicit() {
        let f = Files::new(CREDS, CONFIG);
        let env = f.env(&[
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "ap-south-1"),
            ("AWS_DEFAULT_REGION", "ignored"),
            ("AWS_CA_BUNDLE", "/env/ca.pem"),
            ("AWS_ENDPOINT_URL", "http://10.0.0.1:7080"),
        ]);
        let s = resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().access_key_id, "ENVKEY");
        assert_eq!(s.credentials.unwrap().session_token, None);
        assert_eq!(s.region, "ap-south-1");
        assert_eq!(s.ca_bundle, Some(PathBuf::from("/env/ca.pem")));
        assert_eq!(s.endpoint, "http://10.0.0.1:7080");

        let o = Overrides {
            profile: Some("meshplane".into()),
            region: Some("us-east-2".into()),
            ca_bundle: Some("/flag/ca.pem".into()),
            endpoint: Some("http://flag:1".into()),
        };
        let s = resolve(&o, &env).unwrap();
        assert_eq!(s.credentials.unwrap().access_key_id, "MPAKAAAAAAAAAAAAAAAA");
        assert_eq!(s.region, "us-east-2");
        assert_eq!(s.ca_bundle, Some(PathBuf::from("/flag/ca.pem")));
        assert_eq!(s.endpoint, "http://flag:1");
    }

    #[test]
    fn credentials_may_live_in_the_config_file() {
        let f = Files::new(CREDS, CONFIG);
        let o = Overrides {
            profile: Some("cfgonly".into()),
            ..Overrides::default()
        };
        let s = resolve(&o, &f.env(&[])).unwrap();
        assert_eq!(s.credentials.unwrap().access_key_id, "CFGKEY");
        assert_eq!(s.region, DEFAULT_REGION);
    }

    #[test]
    fn no_files_and_no_env_means_unsigned() {
        let env = vec![("HOME", "/nonexistent-home".to_owned())];
        let s = resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.credentials, None);
        assert_eq!(s.profile, "default");
        // AWS_PROFILE naming a missing profile is an error, unless environment keys exist.
        let env = vec![
            ("HOME", "/nonexistent-home".to_owned()),
            ("AWS_PROFILE", "nope".to_owned()),
        ];
        assert!(matches!(
            resolve(&Overrides::default(), &env),
            Err(ConfigError::ProfileNotFound { .. })
        ));
        let mut env = env;
        env.push(("AWS_ACCESS_KEY_ID", "K".to_owned()));
        env.push(("AWS_SECRET_ACCESS_KEY", "S".to_owned()));
        let s = resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.credentials.unwrap().access_key_id, "K");
        // One half of a pair in the environment is no credential either (as the SDKs do).
        let env = vec![
            ("HOME", "/nonexistent-home".to_owned()),
            ("AWS_ACCESS_KEY_ID", "ONLYID".to_owned()),
        ];
        assert_eq!(
            resolve(&Overrides::default(), &env).unwrap().credentials,
            None
        );
    }

    #[test]
    fn an_explicit_missing_profile_is_an_error() {
        let f = Files::new(CREDS, CONFIG);
        let o = Overrides {
            profile: Some("ghost".into()),
            ..Overrides::default()
        };
        let err = resolve(&o, &f.env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the config profile (ghost) could not be found"
        );
    }

    #[test]
    fn broken_files_are_reported_with_their_line() {
        let f = Files::new("[default]\naws_access_key_id = X\n", "");
        let err = resolve(&Overrides::default(), &f.env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("has aws_access_key_id but no aws_secret_access_key"),
            "{err}"
        );
        let f = Files::new("[default]\nnot a pair\n", "");
        let err = resolve(&Overrides::default(), &f.env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("credentials:2: expected `[section]` or `key = value`"),
            "{err}"
        );
        assert_eq!(parse_ini("key = before any section"), Err(1));
        assert_eq!(parse_ini("[unterminated"), Err(1));
    }

    #[test]
    fn home_files_are_the_fallback() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), CREDS).unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nca_bundle = ~/ca.pem\n",
        )
        .unwrap();
        let env = vec![("HOME", home.path().display().to_string())];
        let s = resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.credentials.unwrap().access_key_id, "DEFAULTKEY");
        assert_eq!(s.ca_bundle, Some(home.path().join("ca.pem")));
    }
}

/// Parses a duration as the CLI flags take it: one or more `<number><unit>` parts with
/// units `s`, `m`, `h`, `d` (`90s`, `10m`, `24h`, `7d`, `1h30m`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration `{text}`: expected e.g. 90s, 10m, 24h, 7d or 1h30m");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn parses_units_and_sums() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("10m", 600),
            ("24h", 86_400),
            ("7d", 604_800),
            ("1h30m", 5400),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "m",
            "10x",
            "10m5",
            "-1m",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
