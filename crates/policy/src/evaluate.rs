//! Evaluation: explicit Deny wins, then any Allow, else implicit deny; over every policy of a key.

use crate::document::{Effect, Patterns, Policy, Statement};
use crate::pattern::{glob, glob_ignore_case};

/// The outcome of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Some statement allows the request and none denies it.
    Allow,
    /// A Deny statement matches (it wins over every Allow).
    ExplicitDeny {
        /// The first matching Deny statement.
        statement: StatementRef,
    },
    /// No statement matches.
    ImplicitDeny,
}

/// Where a statement is: which policy of the slice, which statement in it, and its `Sid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRef {
    /// Index into the policies given to [`evaluate`].
    pub policy: usize,
    /// Index into that policy's statements.
    pub index: usize,
    /// The statement's `Sid`, if any.
    pub sid: Option<String>,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Decides whether `action` (`appmesh:CreateRoute`) on `resource` (an ARN, or `*` for
/// actions without a resource) is allowed by `policies` (all policies of one key).
pub fn evaluate(policies: &[Policy], action: &str, resource: &str) -> Decision {
    let mut allowed = false;
    for (pi, policy) in policies.iter().enumerate() {
        for (si, s) in policy.statements.iter().enumerate() {
            if !applies(s, action, resource) {
                continue;
            }
            match s.effect {
                Effect::Deny => {
                    return Decision::ExplicitDeny {
                        statement: StatementRef {
                            policy: pi,
                            index: si,
                            sid: s.sid.clone(),
                        },
                    };
                }
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// [`evaluate`] for a request that needs `action` on several resources: allowed only if
/// every one is; an explicit deny on any one wins, else the first implicit deny.
pub fn evaluate_all<'a>(
    policies: &[Policy],
    action: &str,
    resources: impl IntoIterator<Item = &'a str>,
) -> Decision {
    let mut out = Decision::Allow;
    for r in resources {
        match evaluate(policies, action, r) {
            d @ Decision::ExplicitDeny { .. } => return d,
            Decision::ImplicitDeny => out = Decision::ImplicitDeny,
            Decision::Allow => {}
        }
    }
    out
}

fn applies(s: &Statement, action: &str, resource: &str) -> bool {
    let action_hit = |patterns: &[String]| patterns.iter().any(|p| action_matches(p, action));
    let resource_hit = |patterns: &[String]| patterns.iter().any(|p| resource_matches(p, resource));
    let a = match &s.action {
        Patterns::Any(p) => action_hit(p),
        Patterns::None(p) => !action_hit(p),
    };
    a && match &s.resource {
        Patterns::Any(p) => resource_hit(p),
        Patterns::None(p) => !resource_hit(p),
    }
}

/// Whether an `Action` pattern names `action`: ASCII case-insensitive, `*` and `?`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob_ignore_case(pattern, action)
}

/// Whether a `Resource` pattern names the ARN `resource`, case-sensitively.
///
/// As IAM: `*` alone matches everything; otherwise partition, service, region and account
/// are matched field by field (a wildcard there stays inside its field) and the resource
/// part with wildcards that span `/` and `:`. A request resource of `*` (an action with
/// no resource type, such as `ListMeshes`) is matched only by a pattern of `*`.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let r: Vec<&str> = resource.splitn(6, ':').collect();
    p.len() == 6 && r.len() == 6 && p.iter().zip(&r).all(|(p, r)| glob(p, r))
}
