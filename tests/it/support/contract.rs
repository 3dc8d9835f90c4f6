//! The API contracts as a test oracle: every JSON response the API tests receive is validated
//! against the response schema that `docs/openapi-jetpost.yaml` (our routes, full paths) or
//! Outpost's `tests/contract/outpost-openapi.yaml` (paths under `/api/v1`) gives for its route,
//! method and status. A route or status a contract does not describe is not checked.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use jsonschema::{Registry, Resource, Validator};
use serde_json::{Value, json};

struct Contract {
    /// `urn:…` under which the document is registered.
    uri: &'static str,
    /// Prefix of the request path the document's paths are relative to.
    base: &'static str,
    doc: Value,
}

struct Contracts {
    docs: Vec<Contract>,
    registry: Registry<'static>,
    validators: Mutex<HashMap<String, &'static Validator>>,
}

fn contracts() -> &'static Contracts {
    static CONTRACTS: OnceLock<Contracts> = OnceLock::new();
    CONTRACTS.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let load = |path: &str| -> Value {
            let text = std::fs::read_to_string(format!("{root}/{path}"))
                .unwrap_or_else(|e| panic!("reading {path}: {e}"));
            let mut doc =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
            normalize(&mut doc);
            doc
        };
        let docs = vec![
            Contract {
                uri: "urn:jetpost",
                base: "",
                doc: load("docs/openapi-jetpost.yaml"),
            },
            Contract {
                uri: "urn:outpost",
                base: "/api/v1",
                doc: load("tests/contract/outpost-openapi.yaml"),
            },
        ];
        let registry = docs
            .iter()
            .fold(Registry::new(), |registry, c| {
                registry
                    .add(c.uri, Resource::from_contents(c.doc.clone()))
                    .expect("contract URI")
            })
            .prepare()
            .expect("contract registry");
        Contracts {
            docs,
            registry,
            validators: Mutex::default(),
        }
    })
}

/// Panics, naming the route and every mismatch, when `body` does not match the contract's
/// schema for `method path` answering `status`.
pub fn check(method: &str, path: &str, status: u16, body: &Value) {
    let path = path.split('?').next().unwrap_or(path);
    let contracts = contracts();
    for contract in &contracts.docs {
        let Some(relative) = path.strip_prefix(contract.base) else {
            continue;
        };
        let Some(template) = template_of(&contract.doc, relative) else {
            continue;
        };
        let Some(pointer) = response_schema(&contract.doc, &template, method, status) else {
            // The contract knows the route but does not describe this answer's body.
            return;
        };
        // A URI fragment: the pointer's braces are percent-encoded.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        let key = format!("{}#{fragment}", contract.uri);
        let validator = {
            let mut cache = contracts.validators.lock().unwrap();
            *cache.entry(key.clone()).or_insert_with(|| {
                let validator = jsonschema::options()
                    .with_registry(&contracts.registry)
                    .build(&json!({ "$ref": key }))
                    .unwrap_or_else(|e| panic!("schema {key}: {e}"));
                Box::leak(Box::new(validator))
            })
        };
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} → {status}: the body does not match {} ({template}):\n{}\nbody: {body}",
            contract.uri,
            errors.join("\n")
        );
        return;
    }
}

/// The document's path template matching `path` (`{param}` matches one segment); the one with
/// the most literal segments wins (`/tenants/{id}/token` over `/tenants/{id}/{x}`).
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .filter_map(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') && part.ends_with('}') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template.clone())
}

/// A JSON pointer (within the document) to the JSON body schema of the answer, following a
/// `$ref` to `#/components/responses/…`.
fn response_schema(doc: &Value, template: &str, method: &str, status: u16) -> Option<String> {
    let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
    let operation = format!(
        "/paths/{}/{}",
        escape(template),
        method.to_ascii_lowercase()
    );
    let responses = doc.pointer(&format!("{operation}/responses"))?;
    let key = status.to_string();
    let (mut pointer, response) = match responses.get(&key) {
        Some(r) => (format!("{operation}/responses/{key}"), r),
        None => (
            format!("{operation}/responses/default"),
            responses.get("default")?,
        ),
    };
    if let Some(target) = response.get("$ref").and_then(Value::as_str) {
        pointer = target.strip_prefix('#')?.to_owned();
    }
    let schema = format!("{pointer}/content/application~1json/schema");
    doc.pointer(&schema).map(|_| schema)
}

/// The documents still write OpenAPI 3.0's `nullable: true`, which JSON Schema ignores: it
/// becomes `"null"` among the `type`s (or an `anyOf` with null where there is no `type`).
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(kind)) => {
                        let kind = kind.clone();
                        map.insert("type".into(), json!([kind, "null"]));
                    }
                    Some(Value::Array(kinds)) => kinds.push(json!("null")),
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
            // Outpost's documents use `oneOf` for alternatives that overlap (an `EventFull`
            // is also an `EventSummary`: neither forbids other properties) where they mean
            // `anyOf`; with a discriminator the alternatives exclude each other anyway.
            if !map.contains_key("discriminator")
                && let Some(alternatives) = map.remove("oneOf")
            {
                map.insert("anyOf".into(), alternatives);
            }
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}
