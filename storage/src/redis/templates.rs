//! The Redis template registry: [`TemplateStore`] for [`RedisStore`].
//!
//! A tenant's registry lives under one hash tag (`{t:<tenant>}`, see [`keys::templates`]), so
//! each write is one script that checks and changes the tenant's index, the template and its
//! content together: creating checks the tenant's template count, adding a version takes the next
//! number, publishing checks the version exists. A template's HASH keeps its versions' summaries
//! (small: what `GET /v1/templates/{id}` shows) and a second HASH their content, read one version
//! at a time.

use std::collections::BTreeMap;

use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use steps::locale::Locale;
use steps::model::{Channel, TemplateId, TenantId};
use steps::render::TemplateContent;
use workflows::ports::{
    LIST_LIMIT_MAX, StoreError, StoreFuture, StoredVersion, TemplateInfo, TemplateStore,
    TemplateSummary, TemplateWrite, VersionSummary,
};

use super::codec::{from_json, to_json};
use super::{RedisStore, parse_pair, parse_string};
use crate::keys;

/// Creates a template with its first version.
///
/// KEYS: the tenant's template index, the template, its content.
/// ARGV: id, templates max, now ms, version 1's summary json, its content json, publish ('1'/'0').
///
/// Returns `{0, HGETALL template}` created, `{1}` the id exists, `{2}` the tenant is full.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {2} end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], 'latest', '1', 'created', ARGV[3], 'updated', ARGV[3], 'v:1', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[2], 'published', '1') end
redis.call('HSET', KEYS[3], '1', ARGV[5])
return {0, redis.call('HGETALL', KEYS[2])}
",
    )
});

/// Adds the next version to a template.
///
/// KEYS: the template, its content.
/// ARGV: versions max, now ms, the summary json, the content json.
///
/// Returns `{0, HGETALL template}` added, `{1}` no such template, `{2}` the template is full.
static ADD_VERSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local latest = redis.call('HGET', KEYS[1], 'latest')
if not latest then return {1} end
local n = tonumber(latest)
if n >= tonumber(ARGV[1]) then return {2} end
n = n + 1
redis.call('HSET', KEYS[1], 'latest', tostring(n), 'updated', ARGV[2], 'v:' .. n, ARGV[3])
redis.call('HSET', KEYS[2], tostring(n), ARGV[4])
return {0, redis.call('HGETALL', KEYS[1])}
",
    )
});

/// Publishes a version.
///
/// KEYS: the template.
/// ARGV: version, now ms.
///
/// Returns `{0, HGETALL template}` published, `{1}` no such template, `{3}` no such version.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end
if redis.call('HEXISTS', KEYS[1], 'v:' .. ARGV[1]) == 0 then return {3} end
if redis.call('HGET', KEYS[1], 'published') ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'published', ARGV[1], 'updated', ARGV[2])
end
return {0, redis.call('HGETALL', KEYS[1])}
",
    )
});

/// A version's summary as stored under `v:<n>`: the number is the field's.
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    created_at_ms: u64,
    default_locale: Locale,
    locales: Vec<Locale>,
    channels: Vec<Channel>,
}

fn summary_json(content: &TemplateContent, now_ms: u64) -> Result<String, StoreError> {
    let s = VersionSummary::of(0, now_ms, content);
    to_json(&Summary {
        created_at_ms: s.created_at_ms,
        default_locale: s.default_locale,
        locales: s.locales,
        channels: s.channels,
    })
}

fn version_summary(version: u32, json: &str) -> Result<VersionSummary, StoreError> {
    let s: Summary = from_json(json)?;
    Ok(VersionSummary {
        version,
        created_at_ms: s.created_at_ms,
        default_locale: s.default_locale,
        locales: s.locales,
        channels: s.channels,
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored template is malformed: {what}"))
}

fn number<T: std::str::FromStr>(
    fields: &BTreeMap<String, String>,
    name: &str,
) -> Result<T, StoreError> {
    fields.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(name))
}

/// A template from its HASH's fields.
fn info(id: &TemplateId, fields: &BTreeMap<String, String>) -> Result<TemplateInfo, StoreError> {
    let published = fields.get("published").map(|v| v.parse().map_err(|_| corrupt("published")));
    let summary = TemplateSummary {
        id: id.clone(),
        published: published.transpose()?,
        latest: number(fields, "latest")?,
        created_at_ms: number(fields, "created")?,
        updated_at_ms: number(fields, "updated")?,
    };
    let mut versions = Vec::with_capacity(summary.latest as usize);
    for (name, json) in fields {
        if let Some(n) = name.strip_prefix("v:") {
            let n: u32 = n.parse().map_err(|_| corrupt(name))?;
            versions.push(version_summary(n, json)?);
        }
    }
    versions.sort_by_key(|v| v.version);
    Ok(TemplateInfo { summary, versions })
}

/// An `HGETALL` reply as a map.
fn fields(value: Value) -> Option<BTreeMap<String, String>> {
    let Value::Array(items) = value else { return None };
    let mut strings = items.into_iter().map(parse_string);
    let mut map = BTreeMap::new();
    while let Some(name) = strings.next() {
        map.insert(name?, strings.next()??);
    }
    Some(map)
}

impl RedisStore {
    /// A write script's reply: `{0, HGETALL}` done, or a refusal code mapped by `refused`.
    fn template_write(
        &self,
        what: &str,
        id: &TemplateId,
        reply: Value,
        refused: impl Fn(i64) -> Option<TemplateWrite>,
    ) -> Result<TemplateWrite, StoreError> {
        let (code, rest) = parse_pair(reply).ok_or_else(|| self.corrupt(what))?;
        if code != 0 {
            return refused(code).ok_or_else(|| self.corrupt(what));
        }
        let map = rest.and_then(fields).ok_or_else(|| self.corrupt(what))?;
        Ok(TemplateWrite::Done(info(id, &map)?))
    }
}

impl TemplateStore for RedisStore {
    fn template_create<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        publish: bool,
        now_ms: u64,
        templates_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Value = CREATE
                .key(keys::templates(tenant))
                .key(keys::template(tenant, id))
                .key(keys::template_content(tenant, id))
                .arg(id.as_str())
                .arg(templates_max)
                .arg(now_ms)
                .arg(summary_json(content, now_ms)?)
                .arg(to_json(content)?)
                .arg(if publish { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error("template_create", &e))?;
            self.template_write("template_create", id, reply, |code| match code {
                1 => Some(TemplateWrite::Exists),
                2 => Some(TemplateWrite::Full { limit: templates_max }),
                _ => None,
            })
        })
    }

    fn template_add_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        now_ms: u64,
        versions_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Value = ADD_VERSION
                .key(keys::template(tenant, id))
                .key(keys::template_content(tenant, id))
                .arg(versions_max)
                .arg(now_ms)
                .arg(summary_json(content, now_ms)?)
                .arg(to_json(content)?)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error("template_add_version", &e))?;
            self.template_write("template_add_version", id, reply, |code| match code {
                1 => Some(TemplateWrite::NotFound),
                2 => Some(TemplateWrite::Full { limit: versions_max }),
                _ => None,
            })
        })
    }

    fn template_publish<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
        now_ms: u64,
    ) -> StoreFuture<'a, TemplateWrite> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Value = PUBLISH
                .key(keys::template(tenant, id))
                .arg(version)
                .arg(now_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error("template_publish", &e))?;
            self.template_write("template_publish", id, reply, |code| match code {
                1 => Some(TemplateWrite::NotFound),
                3 => Some(TemplateWrite::NoSuchVersion),
                _ => None,
            })
        })
    }

    fn template_published<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<Option<u32>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (published, latest): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(keys::template(tenant, id))
                .arg("published")
                .arg("latest")
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("HMGET", &e))?;
            if latest.is_none() {
                return Ok(None);
            }
            let published = published.map(|v| v.parse().map_err(|_| corrupt("published")));
            Ok(Some(published.transpose()?))
        })
    }

    fn template_info<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<TemplateInfo>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let map: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(keys::template(tenant, id))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("HGETALL", &e))?;
            if map.is_empty() {
                return Ok(None);
            }
            Ok(Some(info(id, &map)?))
        })
    }

    fn template_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (summary, content): (Option<String>, Option<String>) = redis::pipe()
                .hget(keys::template(tenant, id), format!("v:{version}"))
                .hget(keys::template_content(tenant, id), version)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("HGET", &e))?;
            let (Some(summary), Some(content)) = (summary, content) else { return Ok(None) };
            Ok(Some(StoredVersion {
                summary: version_summary(version, &summary)?,
                content: from_json(&content)?,
            }))
        })
    }

    fn template_list<'a>(
        &'a self,
        tenant: &'a TenantId,
        after: Option<&'a TemplateId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<TemplateSummary>> {
        Box::pin(async move {
            let limit = limit.min(LIST_LIMIT_MAX);
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut conn = self.conn.clone();
            let from = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
            let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(keys::templates(tenant))
                .arg(from)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("ZRANGEBYLEX", &e))?;
            let ids: Vec<TemplateId> = ids
                .into_iter()
                .map(TemplateId::new)
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("an id in the template index"))?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(keys::template(tenant, id))
                    .arg("published")
                    .arg("latest")
                    .arg("created")
                    .arg("updated");
            }
            let rows: Vec<Vec<Option<String>>> =
                pipe.query_async(&mut conn).await.map_err(|e| self.error("HMGET", &e))?;
            let mut page = Vec::with_capacity(ids.len());
            for (id, row) in ids.into_iter().zip(rows) {
                let map: BTreeMap<String, String> = ["published", "latest", "created", "updated"]
                    .into_iter()
                    .zip(row)
                    .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                    .collect();
                if map.contains_key("latest") {
                    page.push(info(&id, &map)?.summary);
                }
            }
            Ok(page)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_hash_reads_back() {
        let id = TemplateId::new("t").unwrap();
        let summary =
            r#"{"created_at_ms":5,"default_locale":"en","locales":["en"],"channels":["sms"]}"#;
        let map: BTreeMap<String, String> = [
            ("latest", "2"),
            ("created", "5"),
            ("updated", "9"),
            ("published", "1"),
            ("v:2", summary),
            ("v:1", summary),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let info = info(&id, &map).unwrap();
        assert_eq!(info.summary.published, Some(1));
        assert_eq!(info.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
        let mut broken = map.clone();
        broken.insert("latest".into(), "x".into());
        assert!(super::info(&id, &broken).is_err());
    }
}
