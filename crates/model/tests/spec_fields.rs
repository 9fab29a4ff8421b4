//! Data-driven coverage of every constrained field of the App Mesh model.
//!
//! `tests/data/spec-fields.tsv` (a copy of the shared reference) has one row per spec leaf
//! field. For every row with a length, range, enum, pattern or list-count constraint this
//! test starts from a complete valid example of the row's spec kind (switching one-of
//! unions to the member named in the row's `one_of_choices` column), writes a violating
//! value at the row's path, and asserts that `validate_spec` reports exactly that path
//! (with concrete indices); then it writes boundary values that must be accepted.
//!
//! A few rows interact with semantic rules (api.md §6); the fix-ups in [`prepare`] keep
//! the rest of the example consistent (e.g. a `path` match replaces the `prefix` match),
//! and [`accepted_override`] narrows the accepted values where a semantic rule is
//! stricter than the model (outlier-detection durations > 0, documented HTTP retry
//! events). Each is commented where it is applied.

mod common;

use common::{at_mut, example, get, one_of_template, remove, set};
use serde_json::{Value, json};

const TSV: &str = include_str!("data/spec-fields.tsv");

/// `int` members of the model are Java `Integer`s.
const INT_MAX: i64 = i32::MAX as i64;

/// One TSV row.
#[derive(Debug)]
struct Row {
    spec: String,
    path: String,
    ty: String,
    constraints: Vec<Constraint>,
    choices: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Constraint {
    Len(usize, usize),
    Range(i64, Option<i64>),
    Items(usize, usize),
    Enum(Vec<String>),
    Pattern,
}

/// One value to write and what must happen.
struct Case {
    /// Dotted path to write (concrete indices, no `spec.` prefix).
    at: String,
    value: Value,
    /// `Some(needle)`: must be rejected at `at`/`report` with a message containing needle.
    reject: Option<&'static str>,
    /// The path that must be reported, when different from `at`.
    report: String,
}

fn parse_rows() -> Vec<Row> {
    let mut lines = TSV.lines();
    let header = lines.next().expect("header");
    assert_eq!(
        header,
        "spec\tpath\ttype\tpresence_in_parent\tconstraints\tone_of_choices_on_path"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 6, "bad row {l:?}");
            Row {
                spec: cols[0].to_owned(),
                path: cols[1].to_owned(),
                ty: cols[2].to_owned(),
                constraints: parse_constraints(cols[4]),
                choices: cols[5]
                    .split("; ")
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        let (s, m) = c.split_once(':').expect("seg:member");
                        (s.to_owned(), m.to_owned())
                    })
                    .collect(),
            }
        })
        .collect()
}

fn parse_constraints(s: &str) -> Vec<Constraint> {
    if s.is_empty() {
        return Vec::new();
    }
    // The value pattern contains `{0,1}` but never ", ", so ", " separates constraints.
    s.split(", ")
        .map(|part| {
            if let Some(v) = part.strip_prefix("enum ") {
                Constraint::Enum(v.split('|').map(str::to_owned).collect())
            } else if let Some(r) = part.strip_prefix("len ") {
                let (a, b) = r.split_once("..").expect("len a..b");
                Constraint::Len(a.parse().unwrap(), b.parse().unwrap())
            } else if let Some(r) = part.strip_prefix("list ") {
                let r = r.strip_suffix(" items").expect("list a..b items");
                let (a, b) = r.split_once("..").expect("list a..b");
                Constraint::Items(a.parse().unwrap(), b.parse().unwrap())
            } else if part.starts_with("pattern ") {
                Constraint::Pattern
            } else {
                let (a, b) = part
                    .split_once("..")
                    .unwrap_or_else(|| panic!("range {part:?}"));
                Constraint::Range(
                    a.parse().unwrap(),
                    (!b.is_empty()).then(|| b.parse().unwrap()),
                )
            }
        })
        .collect()
}

/// A string of `n` characters that is also a valid header name, regex and Cloud Map
/// attribute key or value.
fn text(n: usize) -> String {
    "a".repeat(n)
}

fn flip_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Values a semantic rule accepts inside the model's range, when narrower than the
/// model's own boundary values.
fn accepted_override(row: &Row, c: &Constraint) -> Option<Vec<Value>> {
    let p = row.path.as_str();
    match c {
        // Semantic rule: outlier-detection durations must be > 0 (model: 0..).
        Constraint::Range(..)
            if p.starts_with("listeners[].outlierDetection.") && p.ends_with(".value") =>
        {
            Some(vec![json!(1), json!(1_000_000_000_000i64)])
        }
        // Semantic rule: only the documented HTTP retry events (model: any 1..25 chars).
        Constraint::Len(..) if p.ends_with("httpRetryEvents[]") => Some(vec![
            json!("server-error"),
            json!("stream-error"),
            json!("client-error"),
        ]),
        _ => None,
    }
}

/// Distinct valid list elements for list-count cases, cycled to fill a list.
fn list_elements(row: &Row, base: &Value, list_path: &str) -> Vec<Value> {
    if row.path.ends_with("httpRetryEvents[]") {
        return [
            "server-error",
            "gateway-error",
            "client-error",
            "stream-error",
        ]
        .iter()
        .map(|s| json!(s))
        .collect();
    }
    if let Some(Constraint::Enum(vals)) = row
        .constraints
        .iter()
        .find(|c| matches!(c, Constraint::Enum(_)))
    {
        return vals.iter().map(|s| json!(s)).collect();
    }
    let first = get(base, &format!("{list_path}[0]"))
        .unwrap_or_else(|| panic!("{}: example has no element at {list_path}[0]", row.path))
        .clone();
    vec![first]
}

fn fill(elements: &[Value], n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| elements[i % elements.len()].clone())
            .collect(),
    )
}

/// The cases for one constraint of one row.
fn cases(row: &Row, c: &Constraint, base: &Value) -> Vec<Case> {
    let concrete = row.path.replace("[]", "[0]");
    let is_element = row.path.ends_with("[]");
    let list_path = row.path.strip_suffix("[]").map(|p| p.replace("[]", "[0]"));
    let mut out = Vec::new();
    let mut push = |value: Value, reject: Option<&'static str>, at: &str, report: &str| {
        out.push(Case {
            at: at.to_owned(),
            value,
            reject,
            report: report.to_owned(),
        });
    };
    // Element constraints write a one-element list and expect the `[0]` path.
    let scalar = |v: Value| if is_element { Value::Array(vec![v]) } else { v };
    let at = list_path.clone().unwrap_or_else(|| concrete.clone());
    let override_ok = accepted_override(row, c);
    match c {
        Constraint::Len(min, max) => {
            if *min > 0 {
                push(
                    scalar(json!(text(min - 1))),
                    Some("length must be between"),
                    &at,
                    &concrete,
                );
            }
            push(
                scalar(json!(text(max + 1))),
                Some("length must be between"),
                &at,
                &concrete,
            );
            let ok = override_ok.unwrap_or_else(|| vec![json!(text(*min)), json!(text(*max))]);
            for v in ok {
                push(scalar(v), None, &at, &concrete);
            }
        }
        Constraint::Range(min, max) => {
            let int = row.ty == "int" || row.ty == "list<int>";
            let upper = max.or(int.then_some(INT_MAX));
            let below_needle = if upper.is_some() {
                "must be between"
            } else {
                "must be at least"
            };
            push(scalar(json!(min - 1)), Some(below_needle), &at, &concrete);
            if let Some(u) = upper {
                push(
                    scalar(json!(u + 1)),
                    Some("must be between"),
                    &at,
                    &concrete,
                );
            }
            let ok = override_ok
                .unwrap_or_else(|| vec![json!(min), json!(upper.unwrap_or(1_000_000_000_000))]);
            for v in ok {
                push(scalar(v), None, &at, &concrete);
            }
        }
        Constraint::Enum(vals) => {
            let mut bad = vec!["bogus".to_owned(), flip_case(&vals[0])];
            // The narrower gateway protocol enums: `tcp` is valid elsewhere, not here.
            if row.path.ends_with("protocol") && !vals.iter().any(|v| v == "tcp") {
                bad.push("tcp".to_owned());
            }
            for b in bad {
                push(scalar(json!(b)), Some("must be one of"), &at, &concrete);
            }
            for v in vals {
                push(scalar(json!(v)), None, &at, &concrete);
            }
        }
        Constraint::Pattern => {
            let good = if row.path.ends_with("key") {
                "k8s.io/pod-name"
            } else {
                "blue green"
            };
            for b in ["\u{e9}t\u{e9}", "tab\there"] {
                push(
                    scalar(json!(b)),
                    Some("must match the pattern"),
                    &at,
                    &concrete,
                );
            }
            push(scalar(json!(good)), None, &at, &concrete);
        }
        Constraint::Items(min, max) => {
            let list = list_path.clone().expect("list-count rows end in []");
            let elems = list_elements(row, base, &list);
            if *min > 0 {
                push(fill(&elems, min - 1), Some("items"), &list, &list);
            }
            push(fill(&elems, max + 1), Some("items"), &list, &list);
            // A list of enum values cannot hold more distinct values than the enum has.
            let accept_max = (*max).min(if elems.len() > 1 { elems.len() } else { *max });
            for n in [*min, accept_max] {
                push(fill(&elems, n), None, &list, &list);
            }
        }
    }
    out
}

/// Switches the one-of unions on the row's path to the named members.
fn choose_members(row: &Row, spec: &mut Value) {
    let concrete = row.path.replace("[]", "[0]");
    for (seg, member) in &row.choices {
        let seg_name = seg.trim_end_matches("[]");
        let needle = if seg.ends_with("[]") {
            format!("{seg_name}[0].{member}")
        } else {
            format!("{seg_name}.{member}")
        };
        let pos = concrete
            .find(&needle)
            .filter(|&p| p == 0 || concrete.as_bytes()[p - 1] == b'.')
            .unwrap_or_else(|| panic!("{}: choice {seg}:{member} not on path", row.path));
        let union_path = &concrete[..pos + needle.len() - member.len() - 1];
        let union = at_mut(spec, union_path);
        if union.get(member.as_str()).is_none() {
            *union = json!({ member.as_str(): one_of_template(seg, member) });
        }
        // Semantic rule: a listener's connection pool and timeout members must match its
        // protocol, so choosing a member also sets the protocol.
        if row.path.starts_with("listeners[]") && (seg == "connectionPool" || seg == "timeout") {
            let other = if seg == "connectionPool" {
                "timeout"
            } else {
                "connectionPool"
            };
            set(spec, "listeners[0].portMapping.protocol", json!(member));
            remove(spec, &format!("listeners[0].{other}"));
        }
    }
}

/// Keeps the rest of the example consistent with the value about to be written.
fn prepare(row: &Row, spec: &mut Value, value: &Value) {
    let p = row.path.as_str();
    let route = p.split('.').next().unwrap_or("");
    // Route matches take a prefix *or* a path, and a path match takes exact *or* regex.
    if p.contains(".match.path.") {
        remove(spec, &format!("{route}.match.prefix"));
        remove(spec, &format!("{route}.action.rewrite.prefix")); // gateway: needs a prefix match
        set(spec, &format!("{route}.match.path"), json!({}));
    }
    // Gateway path rewrite needs a path match; prefix rewrite needs a prefix match.
    if p.contains(".action.rewrite.path.") {
        remove(spec, &format!("{route}.match.prefix"));
        remove(spec, &format!("{route}.action.rewrite.prefix"));
        set(
            spec,
            &format!("{route}.match.path"),
            json!({ "exact": "/old" }),
        );
    }
    // A prefix rewrite sets defaultPrefix or value, not both.
    if p.ends_with(".rewrite.prefix.defaultPrefix") {
        remove(spec, &format!("{route}.action.rewrite.prefix.value"));
    }
    // A hostname match takes exact or suffix.
    if p.contains(".match.hostname.") {
        set(spec, &format!("{route}.match.hostname"), json!({}));
    }
    // Changing a listener's protocol would orphan its protocol-specific pool and timeout.
    if p == "listeners[].portMapping.protocol" {
        remove(spec, "listeners[0].connectionPool");
        remove(spec, "listeners[0].timeout");
    }
    // The health-check port must equal the listener port.
    if p == "listeners[].portMapping.port" {
        remove(spec, "listeners[0].healthCheck.port");
    }
    if p == "listeners[].healthCheck.port"
        && let Some(port) = value.as_i64().filter(|v| (1..=65535).contains(v))
    {
        set(spec, "listeners[0].portMapping.port", json!(port));
    }
    // Weights are relative but must total 1..=100: the other target takes up the slack.
    if p.ends_with("weightedTargets[].weight") {
        let w = value.as_i64().unwrap_or(0);
        let list = p.strip_suffix("[].weight").unwrap().replace("[]", "[0]");
        set(
            spec,
            &format!("{list}[1].weight"),
            json!(if w == 0 { 1 } else { 0 }),
        );
    }
}

#[test]
fn every_constrained_field_is_enforced() {
    let rows = parse_rows();
    let constrained = rows.iter().filter(|r| !r.constraints.is_empty()).count();
    assert!(
        constrained >= 200,
        "the TSV lost rows: only {constrained} constrained"
    );

    let mut exercised = 0;
    let mut rejected_cases = 0;
    let mut accepted_cases = 0;
    let mut failures = Vec::new();
    for row in rows.iter().filter(|r| !r.constraints.is_empty()) {
        let mut base = example(&row.spec, &row.path);
        choose_members(row, &mut base);
        common::assert_valid(&row.spec, &base);
        let mut row_rejections = 0;
        for c in &row.constraints {
            for case in cases(row, c, &base) {
                let mut spec = base.clone();
                prepare(row, &mut spec, &case.value);
                set(&mut spec, &case.at, case.value.clone());
                let v = common::violations(&row.spec, &spec);
                let want = format!("spec.{}", case.report);
                match case.reject {
                    Some(needle) => {
                        rejected_cases += 1;
                        let paths: std::collections::BTreeSet<&str> =
                            v.iter().map(|v| v.path.as_str()).collect();
                        let ok = paths.len() == 1
                            && paths.contains(want.as_str())
                            && v.iter().any(|x| x.message.contains(needle));
                        if ok {
                            row_rejections += 1;
                        } else {
                            failures.push(format!(
                                "{} {}: {} = {} should be rejected only at {want} ({needle}), got {v:?}",
                                row.spec, row.path, case.at, case.value
                            ));
                        }
                    }
                    None => {
                        accepted_cases += 1;
                        if !v.is_empty() {
                            failures.push(format!(
                                "{} {}: {} = {} should be accepted, got {v:?}",
                                row.spec, row.path, case.at, case.value
                            ));
                        }
                    }
                }
            }
        }
        if row_rejections > 0 {
            exercised += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        exercised >= constrained,
        "exercised {exercised} rows, the TSV has {constrained} constrained rows"
    );
    // Guard against a silently shrinking case generator.
    assert!(
        rejected_cases >= constrained,
        "only {rejected_cases} rejected cases"
    );
    assert!(
        accepted_cases >= constrained,
        "only {accepted_cases} accepted cases"
    );
    eprintln!(
        "spec-fields: {exercised} rows, {rejected_cases} rejected and {accepted_cases} accepted cases"
    );
}

#[test]
fn every_example_is_valid() {
    for (spec, path) in [
        ("MeshSpec", ""),
        ("VirtualNodeSpec", ""),
        ("VirtualServiceSpec", ""),
        ("VirtualRouterSpec", ""),
        ("RouteSpec", "httpRoute"),
        ("RouteSpec", "http2Route"),
        ("RouteSpec", "grpcRoute"),
        ("RouteSpec", "tcpRoute"),
        ("VirtualGatewaySpec", ""),
        ("GatewayRouteSpec", "httpRoute"),
        ("GatewayRouteSpec", "http2Route"),
        ("GatewayRouteSpec", "grpcRoute"),
    ] {
        common::assert_valid(spec, &example(spec, path));
    }
}

/// Every leaf of the model (all TSV rows, constrained or not) is present in the
/// complete examples once its one-of members are chosen, parses into the typed spec,
/// validates, and serializes back unchanged: no member of the model is missing,
/// misspelled or dropped by the serde types.
#[test]
fn every_field_of_the_model_round_trips() {
    let rows = parse_rows();
    assert!(rows.len() >= 270, "the TSV lost rows: {}", rows.len());
    for row in &rows {
        let mut spec = example(&row.spec, &row.path);
        choose_members(row, &mut spec);
        let concrete = row.path.replace("[]", "[0]");
        if get(&spec, &concrete).is_none() {
            // Fields that exclude a member of the example (`path` vs `prefix`, `suffix`
            // vs `exact`, ...) are written with their first accepted value.
            let case = row
                .constraints
                .iter()
                .flat_map(|c| cases(row, c, &spec))
                .find(|c| c.reject.is_none())
                .unwrap_or_else(|| {
                    panic!(
                        "{} {}: the complete example does not set this field",
                        row.spec, row.path
                    )
                });
            prepare(row, &mut spec, &case.value);
            set(&mut spec, &case.at, case.value);
        }
        common::assert_valid(&row.spec, &spec);
        let typed = common::parse(&row.spec, &spec);
        let back = serde_json::to_value(&typed).expect("serializes");
        assert_eq!(
            back["spec"], spec,
            "{} {}: round trip changed the spec",
            row.spec, row.path
        );
    }
}
