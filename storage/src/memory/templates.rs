//! The in-memory template registry: [`TemplateStore`] for [`MemoryStore`].
//!
//! Its own lock beside the notification data's: a registry call never touches a notification,
//! so the two need not be atomic together, and each call is one short critical section, as a
//! Lua script is one step on Redis.

use std::collections::BTreeMap;
use std::future::ready;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use steps::model::{TemplateId, TenantId};
use steps::render::TemplateContent;
use workflows::ports::{
    LIST_LIMIT_MAX, StoreFuture, StoredVersion, TemplateInfo, TemplateStore, TemplateSummary,
    TemplateWrite, VersionSummary,
};

use super::MemoryStore;

/// One registry template.
#[derive(Debug, Clone)]
struct Template {
    /// The published version, if any.
    published: Option<u32>,
    /// Versions in order: version `n` is at index `n - 1`.
    versions: Vec<StoredVersion>,
    /// When it was created.
    created_at_ms: u64,
    /// When a version was last added or published.
    updated_at_ms: u64,
}

impl Template {
    fn summary(&self, id: &TemplateId) -> TemplateSummary {
        TemplateSummary {
            id: id.clone(),
            published: self.published,
            latest: self.versions.len() as u32,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }

    fn info(&self, id: &TemplateId) -> TemplateInfo {
        TemplateInfo {
            summary: self.summary(id),
            versions: self.versions.iter().map(|v| v.summary.clone()).collect(),
        }
    }

    fn push(&mut self, content: &TemplateContent, now_ms: u64) {
        let version = self.versions.len() as u32 + 1;
        let summary = VersionSummary::of(version, now_ms, content);
        self.versions.push(StoredVersion { summary, content: content.clone() });
        self.updated_at_ms = now_ms;
    }
}

/// Every tenant's registry.
#[derive(Debug, Default)]
pub(super) struct Registry {
    tenants: BTreeMap<TenantId, BTreeMap<TemplateId, Template>>,
}

/// The registry's lock.
#[derive(Debug, Default)]
pub(super) struct RegistryLock(Mutex<Registry>);

impl RegistryLock {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryStore {
    fn template<T>(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
        read: impl FnOnce(&Template) -> T,
    ) -> Option<T> {
        let registry = self.templates.lock();
        registry.tenants.get(tenant).and_then(|t| t.get(id)).map(read)
    }
}

impl TemplateStore for MemoryStore {
    fn template_create<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        publish: bool,
        now_ms: u64,
        templates_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        let mut registry = self.templates.lock();
        let templates = registry.tenants.entry(tenant.clone()).or_default();
        let outcome = if templates.contains_key(id) {
            TemplateWrite::Exists
        } else if templates.len() >= templates_max as usize {
            TemplateWrite::Full { limit: templates_max }
        } else {
            let mut template = Template {
                published: publish.then_some(1),
                versions: Vec::new(),
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
            };
            template.push(content, now_ms);
            let info = template.info(id);
            templates.insert(id.clone(), template);
            TemplateWrite::Done(info)
        };
        Box::pin(ready(Ok(outcome)))
    }

    fn template_add_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        now_ms: u64,
        versions_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        let mut registry = self.templates.lock();
        let template = registry.tenants.get_mut(tenant).and_then(|t| t.get_mut(id));
        let outcome = match template {
            None => TemplateWrite::NotFound,
            Some(t) if t.versions.len() >= versions_max as usize => {
                TemplateWrite::Full { limit: versions_max }
            }
            Some(t) => {
                t.push(content, now_ms);
                TemplateWrite::Done(t.info(id))
            }
        };
        Box::pin(ready(Ok(outcome)))
    }

    fn template_publish<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
        now_ms: u64,
    ) -> StoreFuture<'a, TemplateWrite> {
        let mut registry = self.templates.lock();
        let template = registry.tenants.get_mut(tenant).and_then(|t| t.get_mut(id));
        let outcome = match template {
            None => TemplateWrite::NotFound,
            Some(t) if version == 0 || version as usize > t.versions.len() => {
                TemplateWrite::NoSuchVersion
            }
            Some(t) => {
                if t.published != Some(version) {
                    t.published = Some(version);
                    t.updated_at_ms = now_ms;
                }
                TemplateWrite::Done(t.info(id))
            }
        };
        Box::pin(ready(Ok(outcome)))
    }

    fn template_published<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<Option<u32>>> {
        Box::pin(ready(Ok(self.template(tenant, id, |t| t.published))))
    }

    fn template_info<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<TemplateInfo>> {
        Box::pin(ready(Ok(self.template(tenant, id, |t| t.info(id)))))
    }

    fn template_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        let index = (version as usize).checked_sub(1);
        let stored =
            self.template(tenant, id, |t| index.and_then(|i| t.versions.get(i)).cloned()).flatten();
        Box::pin(ready(Ok(stored)))
    }

    fn template_list<'a>(
        &'a self,
        tenant: &'a TenantId,
        after: Option<&'a TemplateId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<TemplateSummary>> {
        let registry = self.templates.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let page = registry
            .tenants
            .get(tenant)
            .map(|templates| {
                templates
                    .range::<TemplateId, _>((from, Bound::Unbounded))
                    .take(limit.min(LIST_LIMIT_MAX))
                    .map(|(id, t)| t.summary(id))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(ready(Ok(page)))
    }
}
