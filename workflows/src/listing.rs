//! Searching a tenant's notifications, as pure data and decisions: which records a
//! [`ListQuery`] selects, the order a listing walks them in, where a page stops and how the next
//! one continues.
//!
//! A listing walks the tenant's index (every record, or one state's) newest first by
//! `(updated_at_ms, id)`, descending, and keeps the records every filter of the query holds for.
//! The order is total (ids are unique), so a [`ListCursor`] naming the last position of one page
//! continues exactly after it, with no duplicates or gaps even among records updated in the same
//! millisecond. One request examines at most [`LIST_SCAN_MAX`] records; both stores feed the walk
//! through one [`ListPager`], so they stop, and say why, in the same places.

use steps::model::{Category, Channel, NotificationId, ProviderName, RecipientId};

use crate::dlq::Truncated;
use crate::machine::StateKind;
use crate::record::Record;

/// The most records one listing examines. Bounded so a search with a narrow filter over a large
/// tenant is one request of predictable size: it then answers what it found with a cursor, and
/// the caller continues from there.
pub const LIST_SCAN_MAX: usize = 10_000;
/// The page size when the caller names none.
pub const LIST_LIMIT_DEFAULT: usize = 50;

/// A position in a listing: a record's `(updated_at_ms, id)`. Listings are ordered by it,
/// descending; a cursor continues strictly after (older than) its position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListCursor {
    /// The record's last update, ms since the Unix epoch (its index score).
    pub updated_ms: u64,
    /// The record's id, which orders records updated in the same millisecond.
    pub id: NotificationId,
}

/// The separator of an encoded cursor's parts: not a character ids may hold, and safe in a URL.
const CURSOR_SEPARATOR: char = '~';
/// The version prefix of an encoded cursor, so the encoding can change without misreading old
/// cursors.
const CURSOR_VERSION: &str = "c1";

impl ListCursor {
    /// The cursor of `record`'s position.
    pub fn of(record: &Record) -> Self {
        Self { updated_ms: record.updated_at_ms, id: record.id.clone() }
    }

    /// The opaque string handed to callers.
    pub fn encode(&self) -> String {
        format!(
            "{CURSOR_VERSION}{CURSOR_SEPARATOR}{}{CURSOR_SEPARATOR}{}",
            self.updated_ms, self.id
        )
    }

    /// Parses [`ListCursor::encode`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, CURSOR_SEPARATOR);
        if parts.next()? != CURSOR_VERSION {
            return None;
        }
        let updated_ms = parts.next()?;
        if updated_ms.is_empty() || !updated_ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let updated_ms = updated_ms.parse().ok()?;
        let id = NotificationId::new(parts.next()?).ok()?;
        Some(Self { updated_ms, id })
    }

    /// Whether a record at `(updated_ms, id)` comes after this position in a listing (it is
    /// older, or as old with a smaller id).
    pub fn precedes(&self, updated_ms: u64, id: &NotificationId) -> bool {
        (updated_ms, id) < (self.updated_ms, &self.id)
    }
}

/// A listing query: every filter that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only records in this state.
    pub state: Option<StateKind>,
    /// Only records on this channel: the state's channel (after a fallback, the channel it moved
    /// to), or the requested one for states that have none yet.
    pub channel: Option<Channel>,
    /// Only records whose current or last provider is this one.
    pub provider: Option<ProviderName>,
    /// Only records of this category.
    pub category: Option<Category>,
    /// Only records for this recipient.
    pub recipient: Option<RecipientId>,
    /// Only records last updated at or after this time, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Only records last updated at or before this time, ms since the Unix epoch.
    pub until_ms: Option<u64>,
    /// Continue after this position (the `next` of an earlier page).
    pub cursor: Option<ListCursor>,
    /// At most this many (capped at [`LIST_LIMIT_MAX`](crate::ports::LIST_LIMIT_MAX)).
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            state: None,
            channel: None,
            provider: None,
            category: None,
            recipient: None,
            since_ms: None,
            until_ms: None,
            cursor: None,
            limit: LIST_LIMIT_DEFAULT,
        }
    }
}

impl ListQuery {
    /// Whether the query selects `record`: every filter holds, and the record comes after the
    /// cursor.
    pub fn matches(&self, record: &Record) -> bool {
        let state = &record.state;
        let (from_ms, to_ms) = self.window_ms();
        self.state.is_none_or(|k| state.kind() == k)
            && self.channel.is_none_or(|c| state.channel().unwrap_or(record.request.channel) == c)
            && self.provider.as_ref().is_none_or(|p| state.provider() == Some(p))
            && self.category.as_ref().is_none_or(|c| *c == record.request.category)
            && self.recipient.as_ref().is_none_or(|r| *r == record.request.recipient.id)
            && (from_ms..=to_ms).contains(&record.updated_at_ms)
            && self.cursor.as_ref().is_none_or(|c| c.precedes(record.updated_at_ms, &record.id))
    }

    /// The `updated_at_ms` range the walk covers, inclusive: the time range, narrowed to end at
    /// the cursor's time (records of that millisecond are then told apart by id).
    pub fn window_ms(&self) -> (u64, u64) {
        let from_ms = self.since_ms.unwrap_or(0);
        let to_ms = self.until_ms.unwrap_or(u64::MAX);
        let to_ms = self.cursor.as_ref().map_or(to_ms, |c| to_ms.min(c.updated_ms));
        (from_ms, to_ms)
    }

    /// The limit, between 1 and [`LIST_LIMIT_MAX`](crate::ports::LIST_LIMIT_MAX).
    pub fn limit_capped(&self) -> usize {
        self.limit.clamp(1, crate::ports::LIST_LIMIT_MAX)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    /// The matching records, newest first.
    pub records: Vec<Record>,
    /// How many index entries were examined.
    pub scanned: usize,
    /// Why the page stopped before the end of the listing, if it did.
    pub truncated: Option<Truncated>,
    /// Where the next page starts, when there is one.
    pub next: Option<ListCursor>,
}

/// Builds a page from the index entries of a walk, in listing order. A store offers every entry
/// strictly after the query's cursor inside its [`window_ms`](ListQuery::window_ms), with the
/// record it found for it (`None` when the record is gone), until `offer` says stop; then it
/// says whether any entry was left and takes the page.
#[derive(Debug)]
pub struct ListPager<'a> {
    query: &'a ListQuery,
    page: ListPage,
    last: Option<ListCursor>,
    stopped: Option<Truncated>,
}

impl<'a> ListPager<'a> {
    /// A pager for `query`.
    pub fn new(query: &'a ListQuery) -> Self {
        Self { query, page: ListPage::default(), last: None, stopped: None }
    }

    /// Examines the entry at `position` with its record; `false` once the page is full or the
    /// scan bound is reached (offer nothing more).
    pub fn offer(&mut self, position: ListCursor, record: Option<Record>) -> bool {
        assert!(self.stopped.is_none(), "an entry was offered after the pager stopped");
        self.page.scanned += 1;
        self.last = Some(position);
        // Read after the index: a record updated since no longer sits at this position, and is
        // listed at its new one (or not at all, when that is outside the window).
        if let Some(record) = record.filter(|r| self.query.matches(r)) {
            self.page.records.push(record);
        }
        if self.page.records.len() >= self.query.limit_capped() {
            self.stopped = Some(Truncated::Limit);
        } else if self.page.scanned >= LIST_SCAN_MAX {
            self.stopped = Some(Truncated::Scan);
        }
        self.stopped.is_none()
    }

    /// The page. `more` says whether the walk had entries left when it stopped: only then does
    /// the page name a next one, starting after the last entry examined.
    pub fn finish(mut self, more: bool) -> ListPage {
        if more && let Some(reason) = self.stopped {
            self.page.truncated = Some(reason);
            self.page.next = self.last;
        }
        self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NotificationId {
        NotificationId::new(s).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = ListCursor { updated_ms: 1_700_000_000_123, id: id("n0a01HX.y_z-1") };
        assert_eq!(ListCursor::parse(&cursor.encode()), Some(cursor));
        for bad in ["", "c1", "c1~", "c1~12", "c1~~n1", "c1~x~n1", "c2~12~n1", "c1~12~n 1", "12~n1"]
        {
            assert_eq!(ListCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cursor_precedes_older_records_and_smaller_ids_of_its_millisecond() {
        let cursor = ListCursor { updated_ms: 100, id: id("m") };
        assert!(cursor.precedes(99, &id("z")));
        assert!(cursor.precedes(100, &id("l")));
        assert!(!cursor.precedes(100, &id("m")), "not its own position");
        assert!(!cursor.precedes(100, &id("n")));
        assert!(!cursor.precedes(101, &id("a")));
    }

    #[test]
    fn the_window_ends_at_the_cursor() {
        let query = ListQuery {
            since_ms: Some(10),
            until_ms: Some(500),
            cursor: Some(ListCursor { updated_ms: 300, id: id("a") }),
            ..ListQuery::default()
        };
        assert_eq!(query.window_ms(), (10, 300));
        assert_eq!(ListQuery::default().window_ms(), (0, u64::MAX));
        assert_eq!(ListQuery { limit: 0, ..ListQuery::default() }.limit_capped(), 1);
        assert_eq!(ListQuery { limit: usize::MAX, ..ListQuery::default() }.limit_capped(), 1_000);
    }

    #[test]
    fn a_pager_stops_at_the_scan_bound_and_continues_after_the_last_entry_examined() {
        let query = ListQuery { limit: 5, ..ListQuery::default() };
        let mut pager = ListPager::new(&query);
        let mut offered = 0;
        // Nothing matches (every record is gone): only the scan bound stops the walk.
        while pager.offer(ListCursor { updated_ms: 1_000_000 - offered, id: id("n1") }, None) {
            offered += 1;
        }
        let page = pager.finish(true);
        assert_eq!(page.scanned, LIST_SCAN_MAX);
        assert_eq!(page.truncated, Some(Truncated::Scan));
        let last = 1_000_000 - (LIST_SCAN_MAX as u64 - 1);
        assert_eq!(page.next, Some(ListCursor { updated_ms: last, id: id("n1") }));
    }

    #[test]
    fn a_pager_at_the_end_of_the_walk_names_no_next_page() {
        let query = ListQuery { limit: 1, ..ListQuery::default() };
        let mut pager = ListPager::new(&query);
        assert!(pager.offer(ListCursor { updated_ms: 1, id: id("n1") }, None));
        let page = pager.finish(false);
        assert_eq!((page.scanned, page.truncated, page.next), (1, None, None));
    }
}
