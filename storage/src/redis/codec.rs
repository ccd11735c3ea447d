//! How records and stream entries look in Redis.
//!
//! A record is a HASH: `tenant`, `id`, `version` (a decimal integer, so Lua can compare it),
//! `state` and `request` (JSON), `kind` (the state kind, so Lua can move the record between
//! state indexes), `seed`, `created`, `updated`, while one is scheduled `wake` (ms), once an
//! operator replayed it `replay` (JSON), and when it was created with an idempotency key `idem`
//! (that key's name, for a purge; not part of the [`Record`]).

use std::collections::BTreeMap;

use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use steps::model::{NotificationId, TenantId};
use workflows::ports::StoreError;
use workflows::record::Record;

/// Serializes a payload. Our own types always serialize; an error here is a bug worth reporting
/// rather than a panic in a worker.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot serialize a stored value: {e}")))
}

/// Deserializes a stored payload.
pub(crate) fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode a stored value: {e}")))
}

/// The JSON fields of a record.
#[derive(Debug)]
pub(crate) struct RecordFields {
    /// The state, JSON.
    pub(crate) state: String,
    /// The request, JSON.
    pub(crate) request: String,
    /// The replay data, JSON, or empty.
    pub(crate) replay: String,
}

impl RecordFields {
    /// Encodes the JSON fields of a record.
    pub(crate) fn encode(record: &Record) -> Result<Self, StoreError> {
        Ok(Self {
            state: to_json(&record.state)?,
            request: to_json(&record.request)?,
            replay: record.replay.as_ref().map(to_json).transpose()?.unwrap_or_default(),
        })
    }
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, StoreError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("stored record has no `{name}` field")))
}

fn number(fields: &BTreeMap<String, String>, name: &str) -> Result<u64, StoreError> {
    let raw = field(fields, name)?;
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("stored record field `{name}` is not a number")))
}

/// Decodes a record from its HASH fields; `None` when the hash is empty (no such record).
pub(crate) fn decode_record(
    fields: &BTreeMap<String, String>,
) -> Result<Option<Record>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let tenant = TenantId::new(field(fields, "tenant")?)
        .map_err(|e| StoreError::Corrupt(format!("stored record has a bad tenant: {e}")))?;
    let id = NotificationId::new(field(fields, "id")?)
        .map_err(|e| StoreError::Corrupt(format!("stored record has a bad id: {e}")))?;
    let wake_at_ms = match fields.get("wake").map(String::as_str) {
        None | Some("") => None,
        Some(_) => Some(number(fields, "wake")?),
    };
    Ok(Some(Record {
        tenant,
        id,
        version: number(fields, "version")?,
        state: from_json(field(fields, "state")?)?,
        request: from_json(field(fields, "request")?)?,
        seed: number(fields, "seed")?,
        created_at_ms: number(fields, "created")?,
        updated_at_ms: number(fields, "updated")?,
        wake_at_ms,
        replay: match fields.get("replay").map(String::as_str) {
            None | Some("") => None,
            Some(json) => Some(from_json(json)?),
        },
    }))
}

/// One stream entry: its id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    /// The entry id (`<ms>-<seq>`).
    pub(crate) id: String,
    /// Its field/value pairs, in order.
    pub(crate) fields: Vec<(String, String)>,
}

impl StreamEntry {
    /// The value of a field.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn pairs(value: Value) -> Option<Vec<(Value, Value)>> {
    match value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let Some(k) = it.next() {
                out.push((k, it.next()?));
            }
            Some(out)
        }
        Value::Map(map) => Some(map),
        _ => None,
    }
}

/// Parses a list of stream entries (`XRANGE`, or one stream of `XREADGROUP` / `XAUTOCLAIM`).
/// Entries that came back as nil (deleted while pending, on Redis 6) are skipped.
pub(crate) fn stream_entries(value: Value) -> Option<Vec<StreamEntry>> {
    let Value::Array(items) = value else {
        return matches!(value, Value::Nil).then(Vec::new);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else { continue };
        let mut parts = parts.into_iter();
        let (Some(id), Some(body)) = (parts.next(), parts.next()) else { continue };
        let id = text(id)?;
        let fields = match body {
            Value::Nil => Vec::new(),
            body => {
                pairs(body)?.into_iter().filter_map(|(k, v)| Some((text(k)?, text(v)?))).collect()
            }
        };
        out.push(StreamEntry { id, fields });
    }
    Some(out)
}

/// Parses an `XREADGROUP` reply: (stream key, entries) per stream; nil means nothing arrived.
pub(crate) fn read_reply(value: Value) -> Option<Vec<(String, Vec<StreamEntry>)>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| {
                let Value::Array(parts) = stream else { return None };
                let mut parts = parts.into_iter();
                let key = text(parts.next()?)?;
                Some((key, stream_entries(parts.next()?)?))
            })
            .collect(),
        Value::Map(streams) => streams
            .into_iter()
            .map(|(key, entries)| Some((text(key)?, stream_entries(entries)?)))
            .collect(),
        _ => None,
    }
}

/// Parses an `XAUTOCLAIM` reply: the claimed entries (the cursor and deleted ids are not needed:
/// each call starts from the beginning, and Redis drops deleted ids from the pending list).
pub(crate) fn autoclaim_reply(value: Value) -> Option<Vec<StreamEntry>> {
    let Value::Array(parts) = value else { return None };
    let mut parts = parts.into_iter();
    let _cursor = parts.next()?;
    stream_entries(parts.next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_parse_and_skip_nil_entries() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("w"), bulk("a/b/1"), bulk("t"), bulk("0")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            Value::Nil,
        ]);
        let entries = stream_entries(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].field("w"), Some("a/b/1"));
        assert_eq!(entries[1].fields, vec![]);
    }

    #[test]
    fn read_replies_parse_in_both_protocols() {
        let entries = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("w"), bulk("a/b/1")]),
        ])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), entries)]);
        assert_eq!(read_reply(resp2), read_reply(resp3));
        assert_eq!(read_reply(Value::Nil), Some(vec![]));
    }

    #[test]
    fn an_empty_hash_is_no_record_and_a_broken_one_is_corrupt() {
        assert_eq!(decode_record(&BTreeMap::new()), Ok(None));
        let mut fields = BTreeMap::new();
        fields.insert("tenant".to_owned(), "acme".to_owned());
        assert!(matches!(decode_record(&fields), Err(StoreError::Corrupt(_))));
    }
}
