//! Fuzz target for the Notification Hubs request readers (`src/nh/`): SAS tokens, the
//! direct-batch multipart body, registration XML, installation JSON and PATCH bodies, and the
//! `ServiceBusNotification-*` headers, and import/export job bodies and file rows. Untrusted
//! input from any client; none may panic, and
//! what is accepted must be consistent (a parsed installation serialises to JSON that parses
//! back to the same installation; an accepted registration re-serialises to an entry that
//! parses back to the same handle and tags).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tagcast::nh::{filter, headers, installation_json, job_xml, multipart, registration_xml, sas};
use tagcast::{Installation, InstallationId, PushHandle};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let keys = [sas::SasKey {
        name: "k".into(),
        key: "secret".into(),
        rights: sas::Rights::MANAGE,
    }];
    let _ = sas::verify(&text, &keys, "https://localhost:8443/hub", now);

    let (ct, body) = match text.split_once('\n') {
        Some((c, b)) => (c.to_string(), b.as_bytes().to_vec()),
        None => (text.to_string(), Vec::new()),
    };
    if let Ok(batch) = multipart::parse(&ct, &body) {
        assert!(!batch.handles.is_empty() && batch.handles.len() <= multipart::MAX_BATCH_HANDLES);
    }

    let _ = headers::Format::parse(&text);
    let _ = headers::tag_selector(Some(&text), text.len() % 2 == 0);
    let _ = headers::schedule_time(&text);
    let _ = headers::if_match(&text);
    // A registration listing's `$filter`: read without a device, then matched against one;
    // a filter that reads matches without error.
    let probe = Installation::new(
        InstallationId::new("fuzz").unwrap(),
        PushHandle::apns("ab12").unwrap(),
    );
    let _ = filter::is_channel_filter(&text);
    if filter::check(&text).is_ok() {
        filter::matches(&text, &probe).expect("a filter that reads matches without error");
    }

    if let Ok(reg) = registration_xml::parse_registration(&text) {
        let ctx = registration_xml::AtomContext {
            base_url: "https://localhost:8443/hub".into(),
            updated: SystemTime::UNIX_EPOCH,
            push_secrets: true,
        };
        let xml = registration_xml::entry_xml(&reg, &ctx);
        let back = registration_xml::parse_registration(&xml).expect("our entry reads back");
        assert_eq!(back.handle, reg.handle);
        assert_eq!(back.tags, reg.tags);
        // An import/export row is one line and reads back the same.
        let line = registration_xml::description_line(&reg);
        assert!(!line.contains('\n'));
        let back = registration_xml::parse_registration(&line).expect("our row reads back");
        assert_eq!(back.handle, reg.handle);
        assert_eq!(back.template, reg.template);
    }
    let _ = registration_xml::registration_id_of(&text);
    if let Ok(job) = job_xml::parse_job_request(&text) {
        assert_eq!(job_xml::JobType::parse(job.job_type.name()), Some(job.job_type));
    }

    let id = InstallationId::new("fuzz").expect("valid id");
    if let Ok(inst) = installation_json::parse_installation(data, Some(&id)) {
        let json = installation_json::installation_to_json(&inst);
        let back = installation_json::parse_installation(json.as_bytes(), Some(&id))
            .expect("our JSON reads back");
        assert_eq!(back.handle, inst.handle);
        assert_eq!(back.tags, inst.tags);
        assert_eq!(back.templates, inst.templates);
    }
    let current = Installation::new(id, PushHandle::apns("ab12").expect("valid token"));
    let _ = installation_json::parse_patch(data, &current);
});
