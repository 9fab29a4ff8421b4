//! `apply -f`, `diff -f` and `delete`: read documents, order them, and reconcile each one
//! with the server (create, update, or leave alone), reporting one line per document.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use meshplane_api::{ApiError, name_fields, spec_to_json};
use meshplane_client::{Client, ClientError};
use meshplane_model::validate::{self, Violations};
use meshplane_model::{ResourceId, Tag};
use serde_json::Value;

use super::document::{Document, parse_documents};
use super::plan::{self, DiffLine, display_name, hard_deps, json_diff};
use super::{DeleteArgs, format_error, parse_kind, resolve_id};

/// What applying one document did (or would do, under `--dry-run`).
#[derive(Debug)]
enum Outcome {
    Created,
    /// Spec and/or tags changed; the diff is shown under `--dry-run`.
    Configured(Vec<DiffLine>),
    Unchanged,
}

/// Reads every document of `files` (files, directories, `-`). Returns them in input order,
/// or every problem found (unreadable files, invalid documents, duplicates).
pub fn load(files: &[String]) -> Result<Vec<Document>, Vec<String>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let sources = match expand(f) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for (source, text) in sources {
            match parse_documents(&source, &text) {
                Ok(d) => docs.extend(d),
                Err(es) => errors.extend(es.iter().map(ToString::to_string)),
            }
        }
    }
    for (first, dup) in plan::duplicates(&docs) {
        errors.push(format!(
            "{}: {} is already declared in {}",
            docs[dup].origin,
            display_name(&docs[dup].id),
            docs[first].origin
        ));
    }
    if errors.is_empty() && docs.is_empty() {
        errors.push(format!("no documents found in {}", files.join(", ")));
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// `(source name, text)` for a file, every `*.yaml|*.yml|*.json` of a directory (by name),
/// or stdin (`-`).
fn expand(f: &str) -> Result<Vec<(String, String)>, String> {
    if f == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("-: cannot read stdin: {e}"))?;
        return Ok(vec![("-".to_owned(), text)]);
    }
    let path = Path::new(f);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
    };
    if !path.is_dir() {
        return Ok(vec![(f.to_owned(), read(path)?)]);
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("{f}: cannot read directory: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        })
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect()
}

fn report_invalid(errors: &[String], verb: &str) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "error: nothing {verb}: fix the {} problem(s) above",
        errors.len()
    );
    ExitCode::FAILURE
}

/// `apply -f` (and `diff -f` with `dry_run`).
pub async fn apply(client: &Client, files: &[String], dry_run: bool) -> anyhow::Result<ExitCode> {
    let mut docs = match load(files) {
        Ok(d) => d,
        Err(errors) => return Ok(report_invalid(&errors, "applied")),
    };
    plan::apply_order(&mut docs);
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut failed: HashSet<ResourceId> = HashSet::new();
    for doc in &docs {
        let name = display_name(&doc.id);
        let deps = hard_deps(&doc.id, &doc.spec);
        if let Some(dep) = deps.iter().find(|d| failed.contains(d)) {
            eprintln!("error: {name}: skipped: {} failed", display_name(dep));
            failed.insert(doc.id.clone());
            continue;
        }
        match apply_one(client, doc, dry_run).await {
            Ok(Outcome::Created) => println!("{name} created{suffix}"),
            Ok(Outcome::Configured(diff)) => {
                println!("{name} configured{suffix}");
                if dry_run {
                    for line in diff {
                        println!("    {line}");
                    }
                }
            }
            Ok(Outcome::Unchanged) => println!("{name} unchanged{suffix}"),
            Err(e @ ClientError::Transport(_)) => {
                // Every further document would fail the same way.
                eprintln!("{}", format_error(&name, &e));
                eprintln!("error: stopped: cannot reach {}", client.endpoint());
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                eprintln!("{}", format_error(&name, &e));
                failed.insert(doc.id.clone());
            }
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reconciles one document: create when absent, update when the parsed spec differs,
/// add missing or different tags; nothing is written under `dry_run`.
async fn apply_one(client: &Client, doc: &Document, dry_run: bool) -> Result<Outcome, ClientError> {
    if dry_run {
        // Nothing is sent, so check locally what the server would reject (field rules
        // only; references are checked by the server). A real apply leaves validation
        // to the server: it is the authority, and may be newer than this CLI.
        preflight(doc).map_err(|v| ClientError::Api {
            status: 400,
            error: ApiError::from(v),
        })?;
    }
    let Some(existing) = client.get(&doc.id).await? else {
        if !dry_run {
            client.create(&doc.id, &doc.spec, &doc.tags).await?;
        }
        return Ok(Outcome::Created);
    };
    let mut diff = Vec::new();
    let spec_changed = existing.spec != doc.spec;
    if spec_changed {
        diff = json_diff(
            "spec",
            &spec_to_json(&existing.spec),
            &spec_to_json(&doc.spec),
        );
    }
    // Tags are additive: keys on the server that the document does not mention are kept.
    let mut missing: Vec<Tag> = Vec::new();
    if !doc.tags.is_empty() {
        let current = client.list_tags(&existing.metadata.arn).await?;
        for t in doc.tags.iter().filter(|t| !current.contains(t)) {
            let quoted = |v: &str| Value::String(v.to_owned()).to_string();
            let path = format!("tags.{}", t.key);
            diff.push(match current.iter().find(|c| c.key == t.key) {
                Some(old) => DiffLine::Changed(path, quoted(&old.value), quoted(&t.value)),
                None => DiffLine::Added(path, quoted(&t.value)),
            });
            missing.push(t.clone());
        }
    }
    if !spec_changed && missing.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if !dry_run {
        if spec_changed {
            client.update(&doc.id, &doc.spec).await?;
        }
        if !missing.is_empty() {
            client
                .tag_resource(&existing.metadata.arn, &missing)
                .await?;
        }
    }
    Ok(Outcome::Configured(diff))
}

/// The model's validation of a document's name, spec and tags: every violation, with
/// paths as the server reports them.
fn preflight(doc: &Document) -> Result<(), Violations> {
    let name_field = name_fields(doc.id.kind)
        .last()
        .copied()
        .unwrap_or("meshName");
    let mut all = Vec::new();
    for r in [
        validate::validate_name(name_field, &doc.id.name),
        validate::validate_spec(&doc.spec),
        validate::validate_tags(&doc.tags),
    ] {
        if let Err(v) = r {
            all.extend(v.0);
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        Err(Violations(all))
    }
}

/// `delete KIND NAME` and `delete -f`.
pub async fn delete(client: &Client, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let ids: Vec<ResourceId> = if args.files.is_empty() {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            anyhow::bail!("give KIND NAME, or -f FILE");
        };
        vec![resolve_id(parse_kind(kind)?, name, &args.selector)?]
    } else {
        let mut docs = match load(&args.files) {
            Ok(d) => d,
            Err(errors) => return Ok(report_invalid(&errors, "deleted")),
        };
        plan::delete_order(&mut docs);
        docs.into_iter().map(|d| d.id).collect()
    };
    let mut ok = true;
    for id in &ids {
        let name = display_name(id);
        match client.delete(id).await {
            Ok(_) => println!("{name} deleted"),
            Err(e) if e.is_not_found() && args.ignore_not_found => println!("{name} not found"),
            Err(e @ ClientError::Transport(_)) => {
                eprintln!("{}", format_error(&name, &e));
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                eprintln!("{}", format_error(&name, &e));
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
