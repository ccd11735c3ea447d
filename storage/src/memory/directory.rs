//! The in-memory recipients directory ([`Directory`]), under the store's one lock like everything
//! else in [`MemoryStore`], so each call is atomic. Its semantics follow the Redis directory
//! (`crate::redis::directory`) in everything the conformance suite checks.

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::ops::Bound;

use steps::model::{RecipientId, TenantId};
use steps::preferences::Preferences;
use steps::recipient::{Contact, DEVICES_MAX, Device, DeviceId, Profile, RecipientEntry};
use workflows::ports::{DeviceAdded, Directory, RECIPIENT_PAGE_MAX, RecipientPage, StoreError};

use super::MemoryStore;

/// One recipient's stored data.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// The contact data, once a profile was put.
    contact: Option<Contact>,
    /// The push devices by id.
    devices: BTreeMap<DeviceId, Device>,
    /// The preferences, once put.
    preferences: Option<Preferences>,
    /// Bumped by every write, from 1.
    revision: u64,
    /// When last written.
    updated_at_ms: u64,
}

impl Stored {
    fn entry(&self, id: &RecipientId) -> RecipientEntry {
        let profile = self.contact.as_ref().map(|contact| {
            let mut devices: Vec<Device> = self.devices.values().cloned().collect();
            devices.sort_by(|a, b| (a.added_at_ms, &a.id).cmp(&(b.added_at_ms, &b.id)));
            Profile { contact: contact.clone(), devices }
        });
        RecipientEntry {
            id: id.clone(),
            profile,
            preferences: self.preferences.clone().unwrap_or_default(),
            revision: self.revision,
            updated_at_ms: self.updated_at_ms,
        }
    }

    fn touch(&mut self, now_ms: u64) -> u64 {
        self.revision += 1;
        self.updated_at_ms = now_ms;
        self.revision
    }
}

/// Every tenant's directory: tenant → recipient → data, ordered by id as Redis's lexicographic
/// index is (both compare bytes).
pub(super) type Recipients = BTreeMap<TenantId, BTreeMap<RecipientId, Stored>>;

impl MemoryStore {
    fn page_now(
        &self,
        tenant: &TenantId,
        after: Option<&RecipientId>,
        limit: usize,
    ) -> RecipientPage {
        let limit = limit.min(RECIPIENT_PAGE_MAX);
        let inner = self.lock();
        let Some(recipients) = inner.recipients.get(tenant) else {
            return RecipientPage { entries: Vec::new(), next: None };
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut walk = recipients.range((from, Bound::Unbounded));
        let entries: Vec<RecipientEntry> =
            walk.by_ref().take(limit).map(|(id, stored)| stored.entry(id)).collect();
        let more = walk.next().is_some();
        let next = if more { entries.last().map(|e| e.id.clone()) } else { None };
        RecipientPage { entries, next }
    }
}

impl Directory for MemoryStore {
    fn recipient(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
    ) -> impl Future<Output = Result<Option<RecipientEntry>, StoreError>> + Send {
        let inner = self.lock();
        let entry = inner.recipients.get(tenant).and_then(|r| r.get(id)).map(|s| s.entry(id));
        ready(Ok(entry))
    }

    fn put_contact(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        contact: &Contact,
        now_ms: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send {
        let mut inner = self.lock();
        let stored =
            inner.recipients.entry(tenant.clone()).or_default().entry(id.clone()).or_default();
        let created = stored.contact.replace(contact.clone()).is_none();
        ready(Ok((stored.touch(now_ms), created)))
    }

    fn put_preferences(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        preferences: &Preferences,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut inner = self.lock();
        let stored =
            inner.recipients.entry(tenant.clone()).or_default().entry(id.clone()).or_default();
        stored.preferences = Some(preferences.clone());
        ready(Ok(stored.touch(now_ms)))
    }

    fn add_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &Device,
        now_ms: u64,
    ) -> impl Future<Output = Result<DeviceAdded, StoreError>> + Send {
        let mut inner = self.lock();
        let stored = inner.recipients.get_mut(tenant).and_then(|r| r.get_mut(id));
        let added = match stored {
            Some(stored) if stored.contact.is_some() => {
                if stored.devices.contains_key(&device.id) {
                    DeviceAdded::Exists { revision: stored.revision }
                } else if stored.devices.len() >= DEVICES_MAX {
                    DeviceAdded::Full
                } else {
                    stored.devices.insert(device.id.clone(), device.clone());
                    DeviceAdded::Added { revision: stored.touch(now_ms) }
                }
            }
            _ => DeviceAdded::NoProfile,
        };
        ready(Ok(added))
    }

    fn remove_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        let mut inner = self.lock();
        let stored = inner.recipients.get_mut(tenant).and_then(|r| r.get_mut(id));
        let removed = stored.and_then(|s| s.devices.remove(device).map(|_| s.touch(now_ms)));
        ready(Ok(removed))
    }

    fn recipients(
        &self,
        tenant: &TenantId,
        after: Option<&RecipientId>,
        limit: usize,
    ) -> impl Future<Output = Result<RecipientPage, StoreError>> + Send {
        ready(Ok(self.page_now(tenant, after, limit)))
    }
}
