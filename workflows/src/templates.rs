//! The templates a runner renders: the built-ins (the operator's templates directory, the same
//! for every tenant) and each tenant's registry (a [`TemplateStore`]), with compiled versions
//! cached by (tenant, id, version).
//!
//! # Which template an id names
//! A tenant's own registry template shadows a built-in of the same id (a tenant can customise
//! `welcome`); a tenant without one gets the built-in. A notification pins what it got:
//! a registry version's number (`"3"`) or a built-in's content hash, and those two never look
//! alike ([`TemplateRef::registry_version`]), so rendering a pinned notification always finds
//! the exact text it was accepted with, whatever has been published or shadowed since.
//!
//! # Caching
//! Registry versions are immutable, so a compiled version is cached without any invalidation:
//! the cache is bounded (least recently used go) and a miss costs one store read. What is *not*
//! cached is which version is published: a submission reads it from the store every time, so a
//! publish takes effect on the next submission everywhere.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;
use steps::model::{TemplateId, TemplateRef, TenantId};
use steps::render::{
    CompiledTemplate, LOCALES_CEILING, Limits, RenderError, TemplateContent, TemplateSet,
};

use crate::policy::TemplatePolicy;
use crate::ports::{StoreError, TemplateStore, TemplateWrite};

/// Why a template could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is unknown, not published, invalid, or does not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The registry's store failed: an infrastructure error, worth retrying.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This process has no registry (a built-in-only runner).
    #[error("no template registry is configured")]
    NoRegistry,
}

type Key = (TenantId, TemplateId, u32);

/// Built-in templates, the registry, and the compiled-version cache.
pub struct Templates {
    builtin: Arc<TemplateSet>,
    registry: Option<Arc<dyn TemplateStore>>,
    cache: Mutex<LruCache<Key, Arc<CompiledTemplate>>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.lock().map_or(0, |c| c.len());
        f.debug_struct("Templates")
            .field("builtin", &self.builtin.ids().collect::<Vec<_>>())
            .field("registry", &self.registry.is_some())
            .field("cached", &cached)
            .finish()
    }
}

/// The limits a stored version is compiled with when it is loaded: the locale limit was checked
/// when it was created, and a policy lowered since must not make it unreadable.
fn load_limits() -> Limits {
    Limits { locales_per_version_max: LOCALES_CEILING, ..Limits::default() }
}

impl Templates {
    /// Built-ins only, caching up to `cache_max` compiled registry versions once a registry is
    /// attached.
    pub fn new(builtin: Arc<TemplateSet>, cache_max: usize) -> Self {
        let capacity = NonZeroUsize::new(cache_max).unwrap_or(NonZeroUsize::MIN);
        Self { builtin, registry: None, cache: Mutex::new(LruCache::new(capacity)) }
    }

    /// Attaches the tenants' registry.
    pub fn with_registry(mut self, registry: Arc<dyn TemplateStore>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The built-in templates.
    pub fn builtin(&self) -> &TemplateSet {
        &self.builtin
    }

    /// The registry.
    pub fn registry(&self) -> Result<&dyn TemplateStore, TemplateError> {
        self.registry.as_deref().ok_or(TemplateError::NoRegistry)
    }

    /// How many compiled versions are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// What a new notification of `tenant` naming `id` pins: the tenant's registry template's
    /// published version, or else the built-in.
    pub async fn published(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
    ) -> Result<Arc<CompiledTemplate>, TemplateError> {
        if let Some(registry) = &self.registry {
            match registry.template_published(tenant, id).await? {
                Some(Some(version)) => return self.version(tenant, id, version).await,
                Some(None) => return Err(RenderError::NotPublished(id.clone()).into()),
                None => {}
            }
        }
        Ok(self.builtin.get(id).ok_or_else(|| RenderError::UnknownTemplate(id.clone()))?.clone())
    }

    /// The version a notification pinned.
    pub async fn pinned(
        &self,
        tenant: &TenantId,
        template: &TemplateRef,
    ) -> Result<Arc<CompiledTemplate>, TemplateError> {
        match template.registry_version() {
            Some(version) => self.version(tenant, &template.id, version).await,
            None => Ok(self.builtin.compiled(template)?.clone()),
        }
    }

    /// A registry version, compiled: from the cache, or read and compiled once.
    pub async fn version(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
        version: u32,
    ) -> Result<Arc<CompiledTemplate>, TemplateError> {
        let key = (tenant.clone(), id.clone(), version);
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(hit.clone());
        }
        let Some(stored) = self.registry()?.template_version(tenant, id, version).await? else {
            let version = version.to_string();
            return Err(RenderError::UnknownVersion { id: id.clone(), version }.into());
        };
        let compiled = Arc::new(CompiledTemplate::compile(
            id.clone(),
            version.to_string(),
            stored.content,
            &load_limits(),
        )?);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).put(key, compiled.clone());
        Ok(compiled)
    }

    /// Creates a registry template with `content` as version 1 (published if `publish`), after
    /// checking that it compiles within `policy`'s limits.
    pub async fn create(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
        content: TemplateContent,
        publish: bool,
        now_ms: u64,
        policy: &TemplatePolicy,
    ) -> Result<TemplateWrite, TemplateError> {
        let registry = self.registry()?;
        let content = check(id, content, policy)?;
        let max = policy.templates_per_tenant_max;
        Ok(registry.template_create(tenant, id, &content, publish, now_ms, max).await?)
    }

    /// Adds a draft version to a registry template, after checking that it compiles within
    /// `policy`'s limits.
    pub async fn add_version(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
        content: TemplateContent,
        now_ms: u64,
        policy: &TemplatePolicy,
    ) -> Result<TemplateWrite, TemplateError> {
        let registry = self.registry()?;
        let content = check(id, content, policy)?;
        let max = policy.versions_per_template_max;
        Ok(registry.template_add_version(tenant, id, &content, now_ms, max).await?)
    }

    /// Publishes a version of a registry template.
    pub async fn publish(
        &self,
        tenant: &TenantId,
        id: &TemplateId,
        version: u32,
        now_ms: u64,
    ) -> Result<TemplateWrite, TemplateError> {
        Ok(self.registry()?.template_publish(tenant, id, version, now_ms).await?)
    }
}

/// Checks that `content` compiles within `policy`'s limits, and gives it back.
fn check(
    id: &TemplateId,
    content: TemplateContent,
    policy: &TemplatePolicy,
) -> Result<TemplateContent, RenderError> {
    let compiled = CompiledTemplate::compile(id.clone(), String::new(), content, &policy.limits())?;
    Ok(compiled.into_content())
}
