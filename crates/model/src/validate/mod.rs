//! Spec, name and tag validation: every constraint of the model, all violations at once.
//!
//! Each violation carries the dotted field path (`spec.listeners[0].portMapping.port`) and
//! a lowercase reason that says what was expected and what was found; the API turns the
//! list into one `BadRequestException` message.
//!
//! What is checked here (one module per spec kind, same names as the model):
//! - every constraint of the App Mesh model (`spec-fields.tsv`): string lengths in
//!   characters, numeric ranges, list item counts, enums (including the narrower
//!   virtual-gateway protocol enum) and the Cloud Map attribute patterns;
//! - the semantic rules of the model docs that a single spec can decide (api.md §6),
//!   each documented where it is enforced;
//! - a few inputs the model leaves open but Envoy would reject for the whole
//!   configuration (regexes that do not compile, header names that are not HTTP tokens,
//!   empty query-parameter names, blank DNS hostnames), so users get a 400 instead of
//!   a silently dropped route. Each is marked "Decision" where it is enforced.
//!
//! What is deliberately *not* checked here: anything that needs another resource
//! (does the target virtual node exist, does a route's `port` match one of its router's
//! listeners); that belongs to the store-level reference checks.
//!
//! Required members are non-`Option` in the model and so are reported by serde at parse
//! time; one-of unions reject `{}` and two members at parse time too.

mod common;
mod gateway_route;
mod mesh;
mod route;
mod virtual_gateway;
mod virtual_node;
mod virtual_router;
mod virtual_service;

use crate::{Spec, Tag};

/// One offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path from the request body root, e.g. `spec.listeners[0].portMapping.port`.
    pub path: String,
    /// Why the value is wrong, e.g. `must be between 1 and 65535, got 0`.
    pub message: String,
}

/// All violations found in one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

/// A `string_enum!` type, seen by validation: its allowed values and its wire spelling.
///
/// Implemented by the `string_enum!` macro for every enum of the model.
pub trait WireEnum {
    /// Every value the API accepts, in model order.
    fn values() -> &'static [&'static str];
    /// The wire spelling of this value (the raw input for an unknown value).
    fn wire(&self) -> &str;
    /// True when the value is one of [`WireEnum::values`].
    fn is_known(&self) -> bool;
}

/// Collects violations while walking a spec.
///
/// Every check returns `true` when the value passed, so callers can skip follow-up
/// rules that would only restate the same problem (e.g. "health-check port must equal
/// the listener port" when the port is already out of range).
#[derive(Debug, Default)]
pub(crate) struct Checker {
    out: Vec<Violation>,
}

/// The largest value of an `int` (Java `Integer`) member of the model; `long` members
/// have no upper bound of their own.
pub(crate) const INT_MAX: i64 = i32::MAX as i64;

// === impl Violations ===

impl Violations {
    /// True when no violation was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of violations.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the violations in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.0.iter()
    }

    /// The violations reported for exactly `path`.
    pub fn at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Violation> + 'a {
        self.0.iter().filter(move |v| v.path == path)
    }

    fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.path, v.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// === impl Checker ===

impl Checker {
    /// Records a violation.
    pub(crate) fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Violation {
            path: path.into(),
            message: message.into(),
        });
    }

    /// String length in characters (not bytes), inclusive bounds.
    pub(crate) fn len(&mut self, path: &str, s: &str, min: usize, max: usize) -> bool {
        let n = s.chars().count();
        if (min..=max).contains(&n) {
            return true;
        }
        self.report(
            path,
            format!("length must be between {min} and {max}, got {n}"),
        );
        false
    }

    /// Numeric range, inclusive bounds.
    pub(crate) fn range(&mut self, path: &str, v: i64, min: i64, max: i64) -> bool {
        if (min..=max).contains(&v) {
            return true;
        }
        self.report(path, format!("must be between {min} and {max}, got {v}"));
        false
    }

    /// Numeric lower bound only (`long` members with an open range).
    pub(crate) fn at_least(&mut self, path: &str, v: i64, min: i64) -> bool {
        if v >= min {
            return true;
        }
        self.report(path, format!("must be at least {min}, got {v}"));
        false
    }

    /// List item count, inclusive bounds.
    pub(crate) fn items(&mut self, path: &str, n: usize, min: usize, max: usize) -> bool {
        if (min..=max).contains(&n) {
            return true;
        }
        self.report(
            path,
            format!("must have between {min} and {max} items, got {n}"),
        );
        false
    }

    /// List item count, lower bound only.
    pub(crate) fn at_least_items(&mut self, path: &str, n: usize, min: usize) -> bool {
        if n >= min {
            return true;
        }
        let noun = if min == 1 { "item" } else { "items" };
        self.report(path, format!("must have at least {min} {noun}, got {n}"));
        false
    }

    /// A `string_enum!` value must be one of its known values.
    pub(crate) fn known<E: WireEnum>(&mut self, path: &str, e: &E) -> bool {
        if e.is_known() {
            return true;
        }
        self.not_one_of(path, e.wire(), E::values())
    }

    /// A string must be one of `allowed` (narrowed enums and documented free strings).
    pub(crate) fn one_of(&mut self, path: &str, s: &str, allowed: &[&str]) -> bool {
        if allowed.contains(&s) {
            return true;
        }
        self.not_one_of(path, s, allowed)
    }

    fn not_one_of(&mut self, path: &str, s: &str, allowed: &[&str]) -> bool {
        self.report(
            path,
            format!("must be one of {}, got {s:?}", allowed.join(", ")),
        );
        false
    }

    /// A string must match a model pattern; `shown` is the pattern as the model spells it.
    pub(crate) fn pattern(&mut self, path: &str, s: &str, re: &regex::Regex, shown: &str) -> bool {
        if re.is_match(s) {
            return true;
        }
        self.report(path, format!("must match the pattern {shown}, got {s:?}"));
        false
    }

    /// Reports every element of `keys` that repeats an earlier one, at `path_of(index)`.
    pub(crate) fn unique<K: PartialEq + std::fmt::Debug>(
        &mut self,
        keys: &[K],
        what: &str,
        path_of: impl Fn(usize) -> String,
    ) {
        for (i, k) in keys.iter().enumerate() {
            if let Some(first) = keys[..i].iter().position(|earlier| earlier == k) {
                self.report(
                    path_of(i),
                    format!("duplicate {what} {k:?}, already used at {}", path_of(first)),
                );
            }
        }
    }

    fn finish(self) -> Result<(), Violations> {
        Violations(self.out).into_result()
    }
}

/// Validates a spec; the paths are rooted at `spec`.
///
/// Returns every violation found, not just the first.
pub fn validate_spec(spec: &Spec) -> Result<(), Violations> {
    let mut c = Checker::default();
    let root = "spec";
    match spec {
        Spec::Mesh(s) => mesh::validate(&mut c, root, s),
        Spec::VirtualNode(s) => virtual_node::validate(&mut c, root, s),
        Spec::VirtualService(s) => virtual_service::validate(&mut c, root, s),
        Spec::VirtualRouter(s) => virtual_router::validate(&mut c, root, s),
        Spec::Route(s) => route::validate(&mut c, root, s),
        Spec::VirtualGateway(s) => virtual_gateway::validate(&mut c, root, s),
        Spec::GatewayRoute(s) => gateway_route::validate(&mut c, root, s),
    }
    c.finish()
}

/// The name fields whose value becomes part of an Envoy node id
/// (`mesh/<mesh>/virtualNode/<name>`, `mesh/<mesh>/virtualGateway/<name>`).
pub const NODE_ID_NAME_FIELDS: [&str; 3] = ["meshName", "virtualNodeName", "virtualGatewayName"];

/// Validates a resource name (`ResourceName`: 1..255 characters) given as `field`.
///
/// Decision: the model sets no pattern on `ResourceName`, but a name must be usable.
/// Every name refuses control characters (C0, DEL, C1) and Unicode bidi controls: no
/// proxy, log line or terminal shows them faithfully. The names in
/// [`NODE_ID_NAME_FIELDS`] also refuse `/`, which would make the node id
/// `mesh/<mesh>/virtualNode/<name>` (and the ARN) ambiguous, so no proxy could ever
/// connect as that node. Other kinds keep `/` (virtual service names, routers, routes).
pub fn validate_name(field: &str, name: &str) -> Result<(), Violations> {
    let mut c = Checker::default();
    c.len(field, name, 1, 255);
    if let Some(bad) = name.chars().find(|&ch| is_unusable_in_name(ch)) {
        c.report(
            field,
            format!(
                "must not contain control or bidi characters, got U+{:04X}",
                u32::from(bad)
            ),
        );
    }
    if NODE_ID_NAME_FIELDS.contains(&field) && name.contains('/') {
        c.report(
            field,
            "must not contain \"/\": it becomes part of the Envoy node id mesh/<mesh>/<kind>/<name>",
        );
    }
    c.finish()
}

/// C0, DEL and C1 controls, and the Unicode bidi controls (embeddings, overrides,
/// isolates and marks) that can make a name display as a different one.
fn is_unusable_in_name(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Validates tags: `TagKey` is 1..128 characters and `TagValue` 0..256 characters.
///
/// Paths are `tags[i].key` and `tags[i].value`. The 50-tags-per-resource limit is a
/// `TooManyTagsException`, not a validation error, and is checked by the API layer.
pub fn validate_tags(tags: &[Tag]) -> Result<(), Violations> {
    let mut c = Checker::default();
    for (i, t) in tags.iter().enumerate() {
        c.len(&format!("tags[{i}].key"), &t.key, 1, 128);
        c.len(&format!("tags[{i}].value"), &t.value, 0, 256);
    }
    c.finish()
}
