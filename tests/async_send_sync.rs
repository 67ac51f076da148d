//! Compile-time checks that the public handles can cross threads and tasks.

fn is_send_sync<T: Send + Sync>() {}
fn is_send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    is_send_sync::<tagcast::Registry>();
    is_send_sync::<tagcast::Resolution>();
    is_send_sync::<tagcast::Installation>();
    is_send_sync::<tagcast::TagExpr>();
    is_send_sync::<tagcast::Audience>();
    is_send_sync::<tagcast::RegistryError>();
    is_send_sync::<tagcast::ExprError>();
    is_send::<tagcast::Target>();
    is_send_sync::<tagcast::Engine>();
    is_send_sync::<tagcast::SendHandle>();
    is_send_sync::<tagcast::SendReport>();
    is_send_sync::<tagcast::SendError>();
    is_send_sync::<tagcast::EngineError>();
    is_send_sync::<tagcast::Notification>();
    is_send_sync::<tagcast::credentials::CredentialError>();
}

#[test]
fn upsert_async_future_is_send() {
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let reg = tagcast::Registry::ephemeral(tagcast::RegistryConfig::default()).unwrap();
    let inst = tagcast::Installation::new(
        tagcast::InstallationId::new("x").unwrap(),
        tagcast::PushHandle::apns("ab").unwrap(),
    );
    future_is_send(reg.upsert_async(inst));
}

#[tokio::test]
async fn send_wait_future_is_send() {
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let reg = tagcast::Registry::ephemeral(tagcast::RegistryConfig::default()).unwrap();
    let engine = tagcast::Engine::new(reg, tagcast::EngineConfig::default()).unwrap();
    let n = tagcast::Notification::new()
        .apns(tagcast::ApnsNotification::alert(r#"{"aps":{}}"#).unwrap());
    let h = engine.send(n, tagcast::Audience::All).unwrap();
    future_is_send(h.wait());
    future_is_send(engine.shutdown());
}
