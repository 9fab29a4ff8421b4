//! `get`, `describe` and `export`: read resources and print them as a table, as the API's
//! JSON/YAML, or as apply-able documents.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use meshplane_api::ResourceData;
use meshplane_client::{Client, ClientError, Collection};
use meshplane_model::{ResourceId, ResourceKind, Spec, Tag};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::document::render_documents;
use super::plan::display_name;
use super::{
    DescribeArgs, DocFormat, GetArgs, GetFormat, Selector, format_error, parse_kind, resolve_id,
};

/// A JSON object whose members serialize in the given order (names, spec, metadata,
/// status, tags) rather than sorted.
struct Ordered(Vec<(String, Value)>);

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The resource as the API returns it, members in reading order, plus `tags` if given.
fn ordered(d: &ResourceData, tags: Option<&[Tag]>) -> Ordered {
    let mut j = d.to_json();
    let mut out = Vec::new();
    if let Some(obj) = j.as_object_mut() {
        for f in meshplane_api::name_fields(d.id.kind) {
            if let Some(v) = obj.remove(*f) {
                out.push(((*f).to_owned(), v));
            }
        }
        for f in ["spec", "metadata", "status"] {
            if let Some(v) = obj.remove(f) {
                out.push((f.to_owned(), v));
            }
        }
        out.extend(std::mem::take(obj));
    }
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        let list = tags
            .iter()
            .map(|t| serde_json::json!({"key": t.key, "value": t.value}))
            .collect();
        out.push(("tags".to_owned(), Value::Array(list)));
    }
    Ordered(out)
}

fn fail(subject: &str, e: &ClientError) -> ExitCode {
    eprintln!("{}", format_error(subject, e));
    ExitCode::FAILURE
}

/// What a listing covers: every collection holding resources of `kind` that `sel` selects.
async fn collections(
    client: &Client,
    kind: ResourceKind,
    sel: &Selector,
) -> Result<Vec<Collection>, anyhow::Error> {
    if kind == ResourceKind::Mesh {
        return Ok(vec![Collection::meshes()]);
    }
    let mesh = sel
        .mesh
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--mesh is required for this kind"))?;
    let (parent_kind, parent) = match kind {
        ResourceKind::Route => (ResourceKind::VirtualRouter, &sel.router),
        ResourceKind::GatewayRoute => (ResourceKind::VirtualGateway, &sel.gateway),
        _ => return Ok(vec![Collection::in_mesh(kind, mesh)]),
    };
    Ok(match parent {
        Some(p) => vec![Collection::under(kind, mesh, p.as_str())],
        None => client
            .list_all(&Collection::in_mesh(parent_kind, mesh))
            .await?
            .into_iter()
            .map(|r| Collection::under(kind, mesh, r.id.name))
            .collect(),
    })
}

/// Every resource of the collections, described (a resource deleted meanwhile is skipped).
async fn describe_all(
    client: &Client,
    cols: &[Collection],
) -> Result<Vec<ResourceData>, ClientError> {
    let mut out = Vec::new();
    for c in cols {
        for r in client.list_all(c).await? {
            if let Some(d) = client.get(&r.id).await? {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// `get KIND [NAME]`.
pub async fn get(client: &Client, a: &GetArgs) -> anyhow::Result<ExitCode> {
    let kind = parse_kind(&a.kind)?;
    let items = match &a.name {
        Some(n) => {
            let id = resolve_id(kind, n, &a.selector)?;
            match client.describe(&id).await {
                Ok(d) => vec![d],
                Err(e) => return Ok(fail(&display_name(&id), &e)),
            }
        }
        None => {
            let cols = match collections(client, kind, &a.selector).await {
                Ok(c) => c,
                Err(e) => match e.downcast_ref::<ClientError>() {
                    Some(ce) => return Ok(fail(&list_subject(kind, &a.selector), ce)),
                    None => return Err(e),
                },
            };
            match describe_all(client, &cols).await {
                Ok(d) => d,
                Err(e) => return Ok(fail(&list_subject(kind, &a.selector), &e)),
            }
        }
    };
    let single = a.name.is_some();
    match a.output {
        GetFormat::Table => {
            if items.is_empty() {
                let k = meshplane_api::list_key(kind).to_ascii_lowercase();
                match (&a.selector.mesh, kind) {
                    (Some(m), k2) if k2 != ResourceKind::Mesh => {
                        eprintln!("no {k} found in mesh {m}")
                    }
                    _ => eprintln!("no {k} found"),
                }
            } else {
                print!("{}", table(kind, &items, now_ms()));
            }
        }
        GetFormat::Json => {
            let objs: Vec<Ordered> = items.iter().map(|d| ordered(d, None)).collect();
            let s = if single {
                serde_json::to_string_pretty(&objs[0])?
            } else {
                serde_json::to_string_pretty(&objs)?
            };
            println!("{s}");
        }
        GetFormat::Yaml => {
            let objs: Vec<Ordered> = items.iter().map(|d| ordered(d, None)).collect();
            let s = if single {
                yaml_serde::to_string(&objs[0])?
            } else {
                yaml_serde::to_string(&objs)?
            };
            print!("{s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_subject(kind: ResourceKind, sel: &Selector) -> String {
    let k = meshplane_api::list_key(kind).to_ascii_lowercase();
    match (&sel.mesh, kind) {
        (_, ResourceKind::Mesh) | (None, _) => k,
        (Some(m), _) => format!("{k} in mesh {m}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `45s`, `12m`, `5h`, `3d`: how long ago `ms` was.
fn age(now_ms: i64, ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The aligned table of `get`.
fn table(kind: ResourceKind, items: &[ResourceData], now_ms: i64) -> String {
    let parent_col = match kind {
        ResourceKind::Route => Some("ROUTER"),
        ResourceKind::GatewayRoute => Some("GATEWAY"),
        _ => None,
    };
    let mut header = vec!["NAME"];
    if kind != ResourceKind::Mesh {
        header.push("MESH");
    }
    header.extend(parent_col);
    header.extend(["VERSION", "STATUS", "AGE", "UPDATED"]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    for d in items {
        let mut row = vec![d.id.name.clone()];
        if kind != ResourceKind::Mesh {
            row.push(d.id.mesh.clone());
        }
        if parent_col.is_some() {
            row.push(d.id.parent.clone().unwrap_or_default());
        }
        row.push(d.metadata.version.to_string());
        row.push(d.status.as_str().to_owned());
        row.push(age(now_ms, d.metadata.created_at_ms));
        row.push(age(now_ms, d.metadata.last_updated_at_ms));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `describe KIND NAME`: the full resource and its tags as YAML.
pub async fn describe(client: &Client, a: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let id = resolve_id(parse_kind(&a.kind)?, &a.name, &a.selector)?;
    let subject = display_name(&id);
    let d = match client.describe(&id).await {
        Ok(d) => d,
        Err(e) => return Ok(fail(&subject, &e)),
    };
    let tags = match client.list_tags(&d.metadata.arn).await {
        Ok(t) => t,
        Err(e) => return Ok(fail(&subject, &e)),
    };
    print!("{}", yaml_serde::to_string(&ordered(&d, Some(&tags)))?);
    Ok(ExitCode::SUCCESS)
}

/// `export --mesh M`: every resource of the mesh as documents, in apply order.
pub async fn export(client: &Client, mesh: &str, format: DocFormat) -> anyhow::Result<ExitCode> {
    let subject = format!("mesh/{mesh}");
    match export_docs(client, mesh).await {
        Ok(docs) => {
            print!("{}", render_documents(&docs, format == DocFormat::Json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&subject, &e)),
    }
}

async fn export_docs(
    client: &Client,
    mesh: &str,
) -> Result<Vec<(ResourceId, Spec, Vec<Tag>)>, ClientError> {
    let mut resources = vec![client.describe(&ResourceId::mesh(mesh)).await?];
    for kind in ResourceKind::ALL
        .into_iter()
        .filter(|k| *k != ResourceKind::Mesh)
    {
        let cols = match kind.parent_kind() {
            None => vec![Collection::in_mesh(kind, mesh)],
            Some(pk) => client
                .list_all(&Collection::in_mesh(pk, mesh))
                .await?
                .into_iter()
                .map(|p| Collection::under(kind, mesh, p.id.name))
                .collect(),
        };
        let mut of_kind = describe_all(client, &cols).await?;
        of_kind.sort_by(|a, b| a.id.cmp(&b.id));
        resources.extend(of_kind);
    }
    let mut docs = Vec::with_capacity(resources.len());
    for d in resources {
        let tags = client.list_tags(&d.metadata.arn).await?;
        docs.push((d.id, d.spec, tags));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use meshplane_api::{ResourceMetadata, parse_spec};
    use meshplane_model::Status;
    use serde_json::json;

    use super::*;

    fn data(id: ResourceId, version: i64) -> ResourceData {
        ResourceData {
            spec: parse_spec(id.kind, json!({})).unwrap(),
            id,
            metadata: ResourceMetadata {
                arn: "arn".into(),
                version,
                uid: "u".into(),
                created_at_ms: 1_000_000,
                last_updated_at_ms: 1_000_000 + 3_600_000,
                mesh_owner: "111122223333".into(),
                resource_owner: "111122223333".into(),
            },
            status: Status::Active,
        }
    }

    #[test]
    fn table_has_a_parent_column_for_routes_and_aligned_columns() {
        let items = [
            data(
                ResourceId::grandchild(
                    ResourceKind::Route,
                    "colorapp",
                    "color-router",
                    "color-route",
                ),
                3,
            ),
            data(
                ResourceId::grandchild(ResourceKind::Route, "colorapp", "r", "x"),
                1,
            ),
        ];
        let now = 1_000_000 + 2 * 86_400_000;
        assert_eq!(
            table(ResourceKind::Route, &items, now),
            "NAME          MESH       ROUTER         VERSION   STATUS   AGE   UPDATED\n\
             color-route   colorapp   color-router   3         ACTIVE   2d    47h\n\
             x             colorapp   r              1         ACTIVE   2d    47h\n"
        );
        let meshes = table(
            ResourceKind::Mesh,
            &[data(ResourceId::mesh("m"), 1)],
            1_000_000 + 5_000,
        );
        assert_eq!(
            meshes,
            "NAME   VERSION   STATUS   AGE   UPDATED\nm      1         ACTIVE   5s    0s\n"
        );
    }

    #[test]
    fn ordered_output_puts_names_first_and_tags_last() {
        let d = data(ResourceId::child(ResourceKind::VirtualNode, "m", "n"), 1);
        let tags = [Tag {
            key: "k".into(),
            value: "v".into(),
        }];
        let y = yaml_serde::to_string(&ordered(&d, Some(&tags))).unwrap();
        let keys: Vec<&str> = y
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "meshName",
                "virtualNodeName",
                "spec",
                "metadata",
                "status",
                "tags",
                "- key"
            ]
        );
    }
}
