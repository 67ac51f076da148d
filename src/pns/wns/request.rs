//! The WNS request for one channel (pns-protocols.md §3.2): `POST <channel URI>` with the
//! `X-WNS-*` headers and an OAuth bearer.

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};

use super::answer::classify_wns;
use crate::model::{Platform, PushHandle};
use crate::pns::request::{header_map, no_payload, request, wrong_handle, Outgoing, Protocol};
use crate::pns::verdict::{Reason, Verdict};
use crate::transport::http1::Answer;

pub(crate) struct Wns;

impl Protocol for Wns {
    fn build(
        &self,
        w: &Outgoing<'_>,
        auth: Option<&HeaderValue>,
    ) -> Result<(Request<()>, Bytes), Reason> {
        let n = w.notification.wns_part().ok_or_else(|| no_payload("WNS"))?;
        let PushHandle::Wns(channel) = w.handle else {
            return Err(wrong_handle("a WNS channel URI"));
        };
        let headers = w.headers(&w.prepared[Platform::Wns], || header_map(n.headers()), auth);
        let uri: Uri = channel
            .parse()
            .map_err(|e| Reason::from(format!("bad channel URI: {e}")))?;
        Ok((request(uri, headers), n.body().clone()))
    }

    fn classify(&self, a: &Answer) -> Verdict {
        classify_wns(a.status, &a.headers, std::time::SystemTime::now())
    }
}
