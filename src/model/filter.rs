//! The `$filter` of a registration listing (`GET /registrations?$filter=…`, Notification
//! Hubs' REST API): clauses `<Field> eq '<value>'` joined by ` and `, on the fields the SDKs
//! look devices up by (`DeviceToken`, `FcmV1RegistrationId`, `ChannelUri`, `Endpoint`, …).
//! Pure, over an [`Installation`]: the server evaluates it over its registry, a cluster
//! partition's owner over its partition (which is why it lives here and not in `nh`, which
//! only the server builds). `tagcast::nh::filter` re-exports it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Installation, PushHandle};

/// The fields a channel lookup uses: a filter of only these is what a device asks with the
/// Listen key.
const CHANNEL_FIELDS: [&str; 7] = [
    "DeviceToken",
    "FcmV1RegistrationId",
    "GcmRegistrationId",
    "ChannelUri",
    "Endpoint",
    "P256DH",
    "Auth",
];

/// Whether a `$filter` only looks up a channel (`ChannelUri`, `DeviceToken`, ...): the lookup
/// a device makes with the Listen key.
#[cfg(feature = "server")]
pub fn is_channel_filter(filter: &str) -> bool {
    filter.split(" and ").all(|c| {
        c.split_once(" eq ")
            .is_some_and(|(f, _)| CHANNEL_FIELDS.contains(&f.trim()))
    })
}

/// Whether `inst` matches every clause of `filter`; the error names a clause that cannot be
/// read or a field that is not one of the channel fields.
pub fn matches(filter: &str, inst: &Installation) -> Result<bool, String> {
    for clause in filter.split(" and ") {
        let clause = clause.trim();
        let (field, value) = clause
            .split_once(" eq ")
            .ok_or_else(|| format!("$filter: cannot read {clause:?} (Field eq 'value')"))?;
        let value = value.trim().trim_matches('\'');
        let decoded = percent_decode(value).unwrap_or_else(|| value.to_owned());
        let ok = match (field.trim(), &inst.handle) {
            ("DeviceToken", PushHandle::Apns(_)) => {
                inst.handle.to_text().eq_ignore_ascii_case(value)
            }
            ("FcmV1RegistrationId" | "GcmRegistrationId", PushHandle::Fcm(t)) => &**t == value,
            ("ChannelUri", PushHandle::Wns(u)) => **u == *decoded || &**u == value,
            ("ChannelUri", _) => inst.handle.to_text().eq_ignore_ascii_case(value),
            ("Endpoint", PushHandle::WebPush(s)) => s.endpoint() == decoded,
            ("P256DH", PushHandle::WebPush(s)) => URL_SAFE_NO_PAD.encode(s.p256dh()) == value,
            ("Auth", PushHandle::WebPush(s)) => URL_SAFE_NO_PAD.encode(s.auth()) == value,
            (f, _) if CHANNEL_FIELDS.contains(&f) => false,
            (other, _) => return Err(format!("$filter: unknown field {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks that every clause of `filter` can be read and names a channel field: then
/// [`matches`] gives no error for any device.
pub fn check(filter: &str) -> Result<(), String> {
    for clause in filter.split(" and ") {
        let clause = clause.trim();
        let (field, _) = clause
            .split_once(" eq ")
            .ok_or_else(|| format!("$filter: cannot read {clause:?} (Field eq 'value')"))?;
        if !CHANNEL_FIELDS.contains(&field.trim()) {
            return Err(format!("$filter: unknown field {:?}", field.trim()));
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes (either hex case); `+` stays `+`. `None` for a bad escape or bytes
/// that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = (h(*b.get(i + 1)?)?, h(*b.get(i + 2)?)?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstallationId;

    #[test]
    fn filters_follow_the_sdk() {
        let inst = Installation::new(
            InstallationId::new("r").unwrap(),
            PushHandle::apns("ab12").unwrap(),
        );
        assert!(matches("DeviceToken eq 'AB12'", &inst).unwrap());
        assert!(!matches("DeviceToken eq 'AB13'", &inst).unwrap());
        assert!(!matches("FcmV1RegistrationId eq 'x'", &inst).unwrap());
        assert!(matches("Colour eq 'x'", &inst).is_err());
        assert!(check("Colour eq 'x'").is_err());
        assert!(check("DeviceToken = 'x'").is_err());
        assert!(check("DeviceToken eq 'x' and ChannelUri eq 'y'").is_ok());
        // Every clause is checked, also after one a device would fail.
        assert!(check("DeviceToken eq 'ab12' and Colour eq 'x'").is_err());
        assert!(matches("DeviceToken eq 'AB13' and Colour eq 'x'", &inst).is_ok());
    }

    #[test]
    #[cfg(feature = "server")]
    fn only_channel_filters_are_channel_lookups() {
        assert!(is_channel_filter("ChannelUri eq 'https://x'"));
        assert!(is_channel_filter("Endpoint eq 'a' and P256DH eq 'b'"));
        assert!(!is_channel_filter("Tags eq 'x'"));
        assert!(!is_channel_filter("ChannelUri eq 'a' and Colour eq 'b'"));
    }
}
