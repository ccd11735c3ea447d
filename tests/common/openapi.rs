//! The OpenAPI document (`src/api/openapi.json`) as tests use it: its operations, and
//! `validate(operation_id, status, &body)`, which checks a real answer against the schema the
//! document gives for that operation and status (JSON Schema 2020-12, as OpenAPI 3.1 says,
//! with `$ref`s resolved in the document's `components`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jsonschema::Validator;
use serde_json::Value;

/// The document's text, as the binary embeds and serves it.
pub const TEXT: &str = include_str!("../../src/api/openapi.json");

/// The HTTP methods an OpenAPI path item may hold.
pub const METHODS: [&str; 8] =
    ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The document, parsed.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::from_str(TEXT).expect("src/api/openapi.json is JSON"))
}

/// One documented operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper case: `GET`, `POST`.
    pub method: String,
    /// The path as documented, with its `{placeholders}`.
    pub path: String,
    /// Its `operationId`.
    pub id: String,
    /// The operation object.
    pub spec: Value,
}

/// Every documented operation, in the document's order.
pub fn operations() -> Vec<Operation> {
    let paths = document()["paths"].as_object().expect("the document has paths");
    let mut all = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(spec) = item.get(method) {
                all.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    id: spec["operationId"].as_str().unwrap_or_default().to_owned(),
                    spec: spec.clone(),
                });
            }
        }
    }
    all
}

/// The operation with `operation_id`, or a panic naming it.
pub fn operation(operation_id: &str) -> Operation {
    operations().into_iter().find(|o| o.id == operation_id).unwrap_or_else(|| {
        panic!("no operation has operationId {operation_id:?} in src/api/openapi.json")
    })
}

/// Follows a local `$ref` (`#/components/...`) to what it names; anything else is returned as is.
pub fn resolve(value: &Value) -> &Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| {
                panic!("{reference}: only references inside the document are resolved")
            });
            let target = document()
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} names nothing in the document"));
            resolve(target)
        }
        None => value,
    }
}

/// The response object `operation_id` documents for `status`.
pub fn response(operation_id: &str, status: u16) -> Value {
    let operation = operation(operation_id);
    let responses = &operation.spec["responses"];
    let Some(response) = responses.get(status.to_string()) else {
        let documented: Vec<&String> =
            responses.as_object().map(|r| r.keys().collect()).unwrap_or_default();
        panic!(
            "{operation_id} ({} {}) answered {status}, which src/api/openapi.json does not \
             document (it documents {documented:?})",
            operation.method, operation.path
        );
    };
    resolve(response).clone()
}

/// `schema` ready for a validator: its `$ref`s resolve in the document's components, carried
/// beside it.
fn standalone(schema: &Value) -> Value {
    let mut schema = schema.clone();
    let object = schema.as_object_mut().expect("a schema object");
    object.insert("$schema".into(), "https://json-schema.org/draft/2020-12/schema".into());
    object.insert("components".into(), document()["components"].clone());
    schema
}

/// The validator of the schema `schema()` gives (none when it gives none), built once per
/// `name`: a test validates many answers.
fn validator(name: String, schema: impl FnOnce() -> Option<Value>) -> Option<Arc<Validator>> {
    static VALIDATORS: OnceLock<Mutex<BTreeMap<String, Option<Arc<Validator>>>>> = OnceLock::new();
    let mut cache =
        VALIDATORS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    cache
        .entry(name)
        .or_insert_with_key(|name| {
            schema().map(|schema| {
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&standalone(&schema))
                    .unwrap_or_else(|e| panic!("the schema of {name} does not compile: {e}"));
                Arc::new(validator)
            })
        })
        .clone()
}

/// Every way `body` breaks the validator's schema, each with its place in the body.
fn errors(validator: &Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("  at {:?}: {e}", e.instance_path().to_string()))
        .collect()
}

/// Checks a real answer against the document: `status` must be documented for the operation,
/// and `body` must match its JSON schema (dates checked as `date-time`). An answer documented
/// without a body (204) must have none (`Value::Null`, as `Stack::call` gives it). Panics with
/// every mismatch, each with its place in the body.
pub fn validate(operation_id: &str, status: u16, body: &Value) {
    let response = response(operation_id, status);
    let schema = || response.pointer("/content/application~1json/schema").cloned();
    let Some(validator) = validator(format!("{operation_id} {status}"), schema) else {
        let has_content = response.get("content").is_some();
        assert!(
            has_content || body.is_null(),
            "{operation_id} {status} is documented without a body, but it answered {body}"
        );
        assert!(
            !has_content || body.is_null(),
            "{operation_id} {status} is documented without a JSON body; validate only JSON answers"
        );
        return;
    };
    let errors = errors(&validator, body);
    assert!(
        errors.is_empty(),
        "{operation_id} answered {status} with a body that does not match src/api/openapi.json:\n\
         {}\nthe body: {}",
        errors.join("\n"),
        serde_json::to_string_pretty(body).unwrap_or_default()
    );
}

/// Checks a request body the server accepted against the operation's documented request
/// schema: what the server takes, the document must allow.
pub fn validate_request(operation_id: &str, body: &Value) {
    let operation = operation(operation_id);
    let schema =
        || operation.spec.pointer("/requestBody/content/application~1json/schema").cloned();
    let Some(validator) = validator(format!("{operation_id} request"), schema) else {
        panic!("{operation_id} documents no JSON request body, but the server took {body}");
    };
    let errors = errors(&validator, body);
    assert!(
        errors.is_empty(),
        "the server took this {operation_id} request, which src/api/openapi.json does not allow:\n\
         {}\nthe request: {body}",
        errors.join("\n"),
    );
}
