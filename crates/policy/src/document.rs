//! Parsing IAM policy documents (`Version`, `Statement[]`) into [`Policy`], every problem reported with its JSON path.

use serde_json::{Map, Value};

/// The service prefixes a meshplane policy can name in `Action` / `NotAction`: App Mesh,
/// Cloud Map, and meshplane's own endpoints (`meshplane:CreateAccessKey`,
/// `meshplane:RevokeNodeToken`, `meshplane:GetProxyStatus`, ...).
pub const SERVICES: [&str; 3] = ["appmesh", "servicediscovery", "meshplane"];

/// A parsed identity policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `Version` (`2008-10-17` when the document leaves it out, as IAM does).
    pub version: Version,
    /// `Id`, if given.
    pub id: Option<String>,
    /// The statements in document order.
    pub statements: Vec<Statement>,
}

/// The policy language version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `2012-10-17`: policy variables (`${...}`) exist; meshplane rejects them.
    V2012_10_17,
    /// `2008-10-17`: `${` is literal text.
    V2008_10_17,
}

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// `Sid`, if given.
    pub sid: Option<String>,
    /// `Effect`.
    pub effect: Effect,
    /// `Action` or `NotAction`.
    pub action: Patterns,
    /// `Resource` or `NotResource`.
    pub resource: Patterns,
}

/// `Allow` or `Deny` (case-sensitive, as IAM reads them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Grants the matching requests (unless a Deny matches too).
    Allow,
    /// Refuses the matching requests, whatever else allows them.
    Deny,
}

/// A list of wildcard patterns, or its complement (`NotAction`, `NotResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Patterns {
    /// `Action` / `Resource`: matches when any pattern matches.
    Any(Vec<String>),
    /// `NotAction` / `NotResource`: matches when no pattern matches.
    None(Vec<String>),
}

/// A policy document that was refused: every problem, each with the path of its element.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PolicyError {
    /// At least one problem, in document order.
    pub problems: Vec<Problem>,
}

/// One problem in a policy document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Problem {
    /// JSON path of the offending element (`Statement[2].Effect`; `$` for the document).
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

// === impl Policy ===

impl Policy {
    /// Parses a policy document from JSON text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|e| PolicyError {
            problems: vec![Problem {
                path: "$".to_owned(),
                message: format!("not valid JSON: {e}"),
            }],
        })?;
        Policy::from_value(&value)
    }

    /// Parses a policy document that is already JSON.
    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let mut p = Problems::default();
        let Some(doc) = value.as_object() else {
            p.add("$", format!("must be a JSON object, got {}", kind(value)));
            return Err(p.into_error());
        };
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                p.add(
                    &member("", key),
                    "unknown element (expected Version, Id or Statement; names are case-sensitive)",
                );
            }
        }
        let version = match doc.get("Version") {
            None => Version::V2008_10_17,
            Some(Value::String(v)) if v == "2012-10-17" => Version::V2012_10_17,
            Some(Value::String(v)) if v == "2008-10-17" => Version::V2008_10_17,
            Some(v) => {
                p.add(
                    "Version",
                    format!("must be \"2012-10-17\" or \"2008-10-17\", got {v}"),
                );
                Version::V2012_10_17
            }
        };
        let id = string_member(doc, "Id", "Id", &mut p);
        let mut statements = Vec::new();
        match doc.get("Statement") {
            None => p.add("Statement", "required element is missing"),
            Some(Value::Object(s)) => {
                statements.extend(statement(s, "Statement", version, &mut p));
            }
            Some(Value::Array(list)) if list.is_empty() => {
                p.add("Statement", "must hold at least one statement")
            }
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    let path = format!("Statement[{i}]");
                    match s.as_object() {
                        Some(s) => statements.extend(statement(s, &path, version, &mut p)),
                        None => p.add(&path, format!("must be an object, got {}", kind(s))),
                    }
                }
            }
            Some(v) => p.add(
                "Statement",
                format!("must be an object or an array of objects, got {}", kind(v)),
            ),
        }
        if p.0.is_empty() {
            Ok(Policy {
                version,
                id,
                statements,
            })
        } else {
            Err(p.into_error())
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn into_error(self) -> PolicyError {
        PolicyError { problems: self.0 }
    }
}

/// The path of member `key` under `base`: `base.key`, or `base["key"]` (JSON-quoted) when
/// the key is not a plain word, so that every path names its element unambiguously.
fn member(base: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (plain, base.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{base}.{key}"),
        (false, _) => format!("{base}[{}]", Value::from(key)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_member(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    p: &mut Problems,
) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        v => {
            p.add(path, format!("must be a string, got {}", kind(v)));
            None
        }
    }
}

fn statement(
    s: &Map<String, Value>,
    path: &str,
    version: Version,
    p: &mut Problems,
) -> Option<Statement> {
    let before = p.0.len();
    for key in s.keys() {
        let at = member(path, key);
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" => {}
            "Condition" => p.add(
                &at,
                "conditions are not supported (an ignored condition would widen access)",
            ),
            "Principal" | "NotPrincipal" => p.add(
                &at,
                "not allowed in an identity policy (the key the policy is attached to is the principal)",
            ),
            _ => p.add(
                &at,
                "unknown element (expected Sid, Effect, Action, NotAction, Resource, NotResource; names are case-sensitive)",
            ),
        }
    }
    let sid = string_member(s, "Sid", &format!("{path}.Sid"), p);
    if let Some(sid) = &sid
        && !sid.chars().all(|c| c.is_ascii_alphanumeric())
    {
        p.add(
            &format!("{path}.Sid"),
            format!("must hold only ASCII letters and digits, got {sid:?}"),
        );
    }
    let effect = match s.get("Effect") {
        None => {
            p.add(&format!("{path}.Effect"), "required element is missing");
            None
        }
        Some(Value::String(e)) if e == "Allow" => Some(Effect::Allow),
        Some(Value::String(e)) if e == "Deny" => Some(Effect::Deny),
        Some(v) => {
            p.add(
                &format!("{path}.Effect"),
                format!("must be Allow or Deny, got {v}"),
            );
            None
        }
    };
    let action = one_of(s, path, "Action", "NotAction", p, |v, at, p| {
        check_action(v, at, p)
    });
    let resource = one_of(s, path, "Resource", "NotResource", p, |v, at, p| {
        check_resource(v, at, version, p)
    });
    if p.0.len() > before {
        return None;
    }
    Some(Statement {
        sid,
        effect: effect?,
        action: action?,
        resource: resource?,
    })
}

/// Reads exactly one of `plain` / `not` as a string or a non-empty array of strings.
fn one_of(
    s: &Map<String, Value>,
    path: &str,
    plain: &str,
    not: &str,
    p: &mut Problems,
    check: impl Fn(&str, &str, &mut Problems),
) -> Option<Patterns> {
    let (key, negated) = match (s.get(plain), s.get(not)) {
        (Some(_), Some(_)) => {
            p.add(
                &format!("{path}.{not}"),
                format!("a statement has either {plain} or {not}, not both"),
            );
            return None;
        }
        (None, None) => {
            p.add(
                &format!("{path}.{plain}"),
                format!("required element is missing (or give {not})"),
            );
            return None;
        }
        (Some(_), None) => (plain, false),
        (None, Some(_)) => (not, true),
    };
    let at = format!("{path}.{key}");
    let list: Vec<String> = match &s[key] {
        Value::String(v) => {
            check(v, &at, p);
            vec![v.clone()]
        }
        Value::Array(items) if items.is_empty() => {
            p.add(&at, "must hold at least one entry");
            return None;
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("{at}[{i}]");
                match item {
                    Value::String(v) => {
                        check(v, &at, p);
                        out.push(v.clone());
                    }
                    v => p.add(&at, format!("must be a string, got {}", kind(v))),
                }
            }
            out
        }
        v => {
            p.add(
                &at,
                format!("must be a string or an array of strings, got {}", kind(v)),
            );
            return None;
        }
    };
    Some(if negated {
        Patterns::None(list)
    } else {
        Patterns::Any(list)
    })
}

fn check_action(v: &str, at: &str, p: &mut Problems) {
    if v == "*" {
        return;
    }
    let Some((service, name)) = v.split_once(':') else {
        p.add(
            at,
            format!("must be \"*\" or <service>:<action>, got {v:?}"),
        );
        return;
    };
    if !SERVICES.iter().any(|s| s.eq_ignore_ascii_case(service)) {
        p.add(
            at,
            format!(
                "unknown service prefix {service:?} (meshplane serves appmesh, servicediscovery and meshplane)"
            ),
        );
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
    {
        p.add(
            at,
            format!("action name must be letters, digits, * and ?, got {name:?}"),
        );
    }
}

fn check_resource(v: &str, at: &str, version: Version, p: &mut Problems) {
    if version == Version::V2012_10_17 && v.contains("${") {
        p.add(at, "policy variables (${...}) are not supported");
    }
    if v == "*" {
        return;
    }
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[1].is_empty() || parts[2].is_empty() {
        p.add(
            at,
            format!(
                "must be \"*\" or an ARN (arn:<partition>:<service>:<region>:<account>:<resource>), got {v:?}"
            ),
        );
    }
}
