//! The template registry's checks ([`TemplateStore`]): numbered immutable versions, one
//! published, limits, paging, tenants apart.

use std::collections::BTreeMap;

use steps::locale::Locale;
use steps::model::{Channel, TemplateId, TenantId};
use steps::render::{Part, TemplateContent};
use workflows::ports::{TemplateInfo, TemplateStore, TemplateWrite};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("fixture tenant is valid")
}

fn template_id(name: &str) -> TemplateId {
    TemplateId::new(name).expect("fixture template id is valid")
}

fn locale(tag: &str) -> Locale {
    Locale::parse(tag).expect("fixture locale is valid")
}

/// A version whose SMS says `text` in English and French, and whose English also has an email.
fn content(text: &str) -> TemplateContent {
    let en = BTreeMap::from([
        (Part::SmsBody, format!("{text} {{{{ code }}}}")),
        (Part::EmailSubject, "Code".to_owned()),
        (Part::EmailText, format!("{text} {{{{ code }}}}")),
    ]);
    let fr = BTreeMap::from([(Part::SmsBody, format!("{text} (fr) {{{{ code }}}}"))]);
    TemplateContent {
        default_locale: locale("en"),
        locales: BTreeMap::from([(locale("en"), en), (locale("fr"), fr)]),
    }
}

fn done(write: TemplateWrite) -> TemplateInfo {
    match write {
        TemplateWrite::Done(info) => info,
        other => panic!("expected the write to be done, got {other:?}"),
    }
}

/// Create, add versions, publish, read back: versions count from 1, each keeps its content and
/// time, the published pointer moves only when asked, and refusals change nothing.
pub async fn templates_create_version_publish_and_read<S: TemplateStore>(store: &S) {
    let acme = tenant("acme");
    let otp = template_id("otp");
    assert_eq!(store.template_published(&acme, &otp).await, Ok(None));
    assert_eq!(store.template_info(&acme, &otp).await, Ok(None));

    let created = done(
        store.template_create(&acme, &otp, &content("v1"), true, 1_000, 10).await.expect("create"),
    );
    assert_eq!(created.summary.id, otp);
    assert_eq!((created.summary.published, created.summary.latest), (Some(1), 1));
    assert_eq!((created.summary.created_at_ms, created.summary.updated_at_ms), (1_000, 1_000));
    let v1 = &created.versions[0];
    assert_eq!((v1.version, v1.created_at_ms), (1, 1_000));
    assert_eq!(v1.default_locale, locale("en"));
    assert_eq!(v1.locales, vec![locale("en"), locale("fr")]);
    assert_eq!(v1.channels, vec![Channel::Email, Channel::Sms]);
    assert_eq!(store.template_published(&acme, &otp).await, Ok(Some(Some(1))));

    // The id is taken: a second create is refused and changes nothing.
    let again = store.template_create(&acme, &otp, &content("other"), true, 2_000, 10).await;
    assert_eq!(again, Ok(TemplateWrite::Exists));

    // A draft: the next number, not published.
    let added = done(
        store.template_add_version(&acme, &otp, &content("v2"), 3_000, 10).await.expect("add"),
    );
    assert_eq!((added.summary.published, added.summary.latest), (Some(1), 2));
    assert_eq!(added.summary.updated_at_ms, 3_000);
    assert_eq!(added.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.template_published(&acme, &otp).await, Ok(Some(Some(1))));

    // Versions keep their content.
    let stored = store.template_version(&acme, &otp, 1).await.expect("read").expect("version 1");
    assert_eq!((stored.summary.version, stored.content), (1, content("v1")));
    let stored = store.template_version(&acme, &otp, 2).await.expect("read").expect("version 2");
    assert_eq!((stored.summary.version, stored.summary.created_at_ms), (2, 3_000));
    assert_eq!(stored.content, content("v2"));
    for missing in [0, 3, u32::MAX] {
        assert_eq!(store.template_version(&acme, &otp, missing).await, Ok(None), "{missing}");
    }

    // Publishing moves the pointer, and only to a version that exists.
    let published = done(store.template_publish(&acme, &otp, 2, 4_000).await.expect("publish"));
    assert_eq!((published.summary.published, published.summary.updated_at_ms), (Some(2), 4_000));
    assert_eq!(store.template_published(&acme, &otp).await, Ok(Some(Some(2))));
    // Publishing it again changes nothing, not even the time.
    let same = done(store.template_publish(&acme, &otp, 2, 5_000).await.expect("publish"));
    assert_eq!(same.summary.updated_at_ms, 4_000);
    for missing in [0, 3] {
        let refused = store.template_publish(&acme, &otp, missing, 6_000).await;
        assert_eq!(refused, Ok(TemplateWrite::NoSuchVersion), "{missing}");
    }
    // Back to version 1: a rollback is a publish.
    done(store.template_publish(&acme, &otp, 1, 7_000).await.expect("publish"));
    assert_eq!(store.template_published(&acme, &otp).await, Ok(Some(Some(1))));
    let info = store.template_info(&acme, &otp).await.expect("info").expect("exists");
    assert_eq!((info.summary.published, info.summary.latest), (Some(1), 2));
    assert_eq!(info.summary.created_at_ms, 1_000);
    assert_eq!(info.versions, added.versions);

    // A template nobody created.
    let nope = template_id("nope");
    assert_eq!(
        store.template_add_version(&acme, &nope, &content("x"), 1, 10).await,
        Ok(TemplateWrite::NotFound)
    );
    assert_eq!(store.template_publish(&acme, &nope, 1, 1).await, Ok(TemplateWrite::NotFound));
    assert_eq!(store.template_info(&acme, &nope).await, Ok(None));
}

/// A template created without publishing has no published version until one is published.
pub async fn a_template_may_start_as_a_draft<S: TemplateStore>(store: &S) {
    let acme = tenant("acme");
    let news = template_id("news");
    let created = done(
        store
            .template_create(&acme, &news, &content("draft"), false, 10, 10)
            .await
            .expect("create"),
    );
    assert_eq!((created.summary.published, created.summary.latest), (None, 1));
    assert_eq!(store.template_published(&acme, &news).await, Ok(Some(None)));
    done(store.template_publish(&acme, &news, 1, 20).await.expect("publish"));
    assert_eq!(store.template_published(&acme, &news).await, Ok(Some(Some(1))));
}

/// The per-tenant template limit and the per-template version limit are enforced atomically
/// and per tenant.
pub async fn template_limits_are_enforced<S: TemplateStore>(store: &S) {
    let acme = tenant("acme");
    for n in 0..3 {
        let id = template_id(&format!("t{n}"));
        done(store.template_create(&acme, &id, &content("x"), true, 1, 3).await.expect("create"));
    }
    let fourth = store.template_create(&acme, &template_id("t3"), &content("x"), true, 1, 3).await;
    assert_eq!(fourth, Ok(TemplateWrite::Full { limit: 3 }));
    assert_eq!(store.template_info(&acme, &template_id("t3")).await, Ok(None));
    // Another tenant has its own count.
    let globex = tenant("globex");
    done(
        store
            .template_create(&globex, &template_id("t3"), &content("x"), true, 1, 3)
            .await
            .expect("create"),
    );

    let t0 = template_id("t0");
    done(store.template_add_version(&acme, &t0, &content("2"), 2, 3).await.expect("add"));
    done(store.template_add_version(&acme, &t0, &content("3"), 3, 3).await.expect("add"));
    let full = store.template_add_version(&acme, &t0, &content("4"), 4, 3).await;
    assert_eq!(full, Ok(TemplateWrite::Full { limit: 3 }));
    let info = store.template_info(&acme, &t0).await.expect("info").expect("exists");
    assert_eq!(info.summary.latest, 3);
    assert_eq!(store.template_version(&acme, &t0, 4).await, Ok(None));
}

/// Listing pages through a tenant's templates in id order, after a cursor, and sees no other
/// tenant's.
pub async fn templates_are_listed_in_pages_and_apart_per_tenant<S: TemplateStore>(store: &S) {
    let acme = tenant("acme");
    let globex = tenant("globex");
    for name in ["welcome", "alert", "otp", "Zeta", "receipt.v2"] {
        let id = template_id(name);
        done(
            store
                .template_create(&acme, &id, &content(name), name != "otp", 1, 100)
                .await
                .expect("create"),
        );
    }
    done(
        store
            .template_create(&globex, &template_id("globex-only"), &content("g"), true, 1, 100)
            .await
            .expect("create"),
    );
    let ids = |page: &[workflows::ports::TemplateSummary]| {
        page.iter().map(|t| t.id.as_str().to_owned()).collect::<Vec<_>>()
    };
    let all = store.template_list(&acme, None, 100).await.expect("list");
    assert_eq!(ids(&all), ["Zeta", "alert", "otp", "receipt.v2", "welcome"], "byte order");
    assert_eq!(all[2].published, None);
    assert_eq!(all[3].published, Some(1));
    let first = store.template_list(&acme, None, 2).await.expect("list");
    assert_eq!(ids(&first), ["Zeta", "alert"]);
    let next = store.template_list(&acme, Some(&first[1].id), 2).await.expect("list");
    assert_eq!(ids(&next), ["otp", "receipt.v2"]);
    let last = store.template_list(&acme, Some(&next[1].id), 2).await.expect("list");
    assert_eq!(ids(&last), ["welcome"]);
    let after_last = store.template_list(&acme, Some(&last[0].id), 2).await.expect("list");
    assert!(after_last.is_empty());
    // A cursor that is not an id of the tenant still pages from where it would sort.
    let from_p = store.template_list(&acme, Some(&template_id("p")), 10).await.expect("list");
    assert_eq!(ids(&from_p), ["receipt.v2", "welcome"]);
    assert_eq!(store.template_list(&acme, None, 0).await, Ok(vec![]));
    // Tenants apart.
    let theirs = store.template_list(&globex, None, 100).await.expect("list");
    assert_eq!(ids(&theirs), ["globex-only"]);
    let otp = template_id("otp");
    assert_eq!(store.template_published(&globex, &otp).await, Ok(None));
    assert_eq!(store.template_version(&globex, &otp, 1).await, Ok(None));
    assert_eq!(store.template_publish(&globex, &otp, 1, 1).await, Ok(TemplateWrite::NotFound));
    assert_eq!(store.template_list(&tenant("initech"), None, 10).await, Ok(vec![]));
}
