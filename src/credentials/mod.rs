//! PNS credentials: APNs provider tokens and certificates, FCM service accounts, WNS OAuth,
//! VAPID, and RFC 8291 message encryption. Sans-IO: signing and parsing only; the transports
//! do the HTTP exchanges.
