//! The server's hardening at the connection and unauthenticated surface (audit
//! `shared/design/server-audit.md`, issue 15), through raw HTTP/1.1 on loopback: unknown
//! methods and metric labels (H1), connection deadlines and the connection cap (H2), where
//! `/metrics` is served (M13), what a refused token reveals (L1, L2, L3), token audiences
//! (M7), `Content-Encoding` (L10), `api-version` and tracking ids (F3, F4), and the drain
//! delay at shutdown (M10). Every refusal is followed by a read showing nothing changed.

mod common;
mod rest;

use std::time::{Duration, Instant, SystemTime};

use rest::{
    call, closed_within, inst_path, read_head, sas, sas_expiring, sas_for, try_call, unix_now, Env,
    Setup, HUB, KEY,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn setup(server: &str) -> Setup {
    Setup {
        server: server.to_owned(),
        ..Setup::default()
    }
}

fn body(id: &str) -> Vec<u8> {
    rest::apns_inst(id, 1, &["t"]).into_bytes()
}

// audit H1: the method is a metric label only from a fixed set; unknown methods get 501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_get_501_and_never_become_metric_labels() {
    let env = Env::start(Setup::default()).await;
    let long = format!("LONGMETHOD{}", "Q".repeat(10 * 1024));
    for method in ["FOOBAR", long.as_str()] {
        let a = env.call(method, "/healthz", &[], b"").await;
        assert_eq!(a.status, 501, "{method:.20}: {a:?}");
        assert!(a.detail().contains("not implemented"), "{a:?}");
        // Before any hub or token is looked at: also on an API path, nothing written.
        let a = env
            .call(
                method,
                &inst_path("h1"),
                std::slice::from_ref(&env.full),
                &body("h1"),
            )
            .await;
        assert_eq!(a.status, 501, "{a:?}");
    }
    assert_eq!(env.get_status("h1").await, 404);
    let metrics = env.call("GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    let m = &metrics.body;
    assert!(!m.contains("FOOBAR"), "the method text became a label");
    assert!(
        !m.contains("LONGMETHOD") && !m.contains("QQQQQQQQ"),
        "long method in /metrics"
    );
    // Counted under the fixed label `other`, with the route label.
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("tagcast_http_requests_total{")
                && l.contains("method=\"other\"")
                && l.contains("route=\"healthz\"")
                && l.contains("status=\"501\"")
        })
        .unwrap_or_else(|| panic!("no counter for the 501s in\n{m}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{line}");
    assert!(
        m.lines().any(|l| l.contains("method=\"other\"")
            && l.contains("route=\"installations\"")
            && l.contains("status=\"501\"")),
        "{m}"
    );
    env.server.shutdown().await;
}

// audit H2: a request head dribbled slower than header_read_timeout_secs closes the
// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_request_head_is_cut_off() {
    let env = Env::start(setup(
        "header_read_timeout_secs = 1\nidle_timeout_secs = 30",
    ))
    .await;
    let mut s = TcpStream::connect(env.addr).await.unwrap();
    let started = Instant::now();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n",
        inst_path("slow"),
        env.addr,
        "a".repeat(64)
    );
    // One byte every 100 ms: the head would take ~12 s.
    let dribble = async {
        for b in head.bytes() {
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), dribble).await;
    // The server has closed it (a write fails or a read sees EOF) by about 1 s.
    let closed = closed_within(&mut s, Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(env.get_status("slow").await, 404);
    env.server.shutdown().await;
}

// audit H2: a body slower than body_read_timeout_secs is answered 408 and not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_is_not_written() {
    let env = Env::start(setup("body_read_timeout_secs = 1")).await;
    let b = body("slowbody");
    let mut s = TcpStream::connect(env.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
        inst_path("slowbody"),
        env.addr,
        env.full.0,
        env.full.1,
        b.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&b[..10]).await.unwrap();
    let started = Instant::now();
    let answer = read_head(&mut s, Duration::from_secs(4))
        .await
        .expect("an answer while the body is incomplete");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The rest of the body arriving late changes nothing.
    let _ = s.write_all(&b[10..]).await;
    assert_eq!(env.get_status("slowbody").await, 404);
    env.server.shutdown().await;
}

// audit H2: an idle keep-alive connection is closed after idle_timeout_secs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = Env::start(setup(
        "idle_timeout_secs = 1\nheader_read_timeout_secs = 30",
    ))
    .await;
    let mut s = TcpStream::connect(env.addr).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", env.addr).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "keep-alive connection still open after 3 s idle"
    );
    // Not before the idle timeout (the watchdog looks every 250 ms).
    assert!(
        idle_from.elapsed() >= Duration::from_millis(700),
        "{:?}",
        idle_from.elapsed()
    );
    env.server.shutdown().await;
}

// audit H2: a thousand idle sockets do not delay a normal request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_do_not_starve_a_request() {
    let env = Env::start(setup(
        "header_read_timeout_secs = 30\nidle_timeout_secs = 30",
    ))
    .await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(TcpStream::connect(env.addr).await.unwrap());
    }
    let started = Instant::now();
    let a = env.full("GET", &inst_path("nobody"), b"").await;
    let took = started.elapsed();
    assert_eq!(a.status, 404, "{a:?}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let a = env.call("GET", "/healthz", &[], b"").await;
    assert_eq!(a.status, 200);
    drop(idle);
    env.server.shutdown().await;
}

// audit H2: beyond max_connections, a connection waits (unanswered) until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_connection_waits_for_a_free_slot() {
    let env = Env::start(setup(
        "max_connections = 3\nheader_read_timeout_secs = 30\nidle_timeout_secs = 30",
    ))
    .await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(TcpStream::connect(env.addr).await.unwrap());
    }
    // Let the server accept the three.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(env.addr).await.unwrap();
    fourth
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                env.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_head(&mut fourth, Duration::from_millis(800)).await,
        None,
        "the fourth connection was served beside three open ones"
    );
    drop(first.pop());
    let head = read_head(&mut fourth, Duration::from_secs(3))
        .await
        .expect("served once a connection closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(first);
    env.server.shutdown().await;
}

// audit H2 (per-address cap): beyond max_connections_per_ip, a connection from the same
// address is closed at once; when one closes, the address may connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_closed() {
    let env = Env::start(setup(
        "max_connections_per_ip = 2\nheader_read_timeout_secs = 30\nidle_timeout_secs = 30",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(env.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(env.addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(3)).await,
        "a third connection from one address stayed open"
    );
    if let Ok(a) = try_call(env.addr, "GET", "/healthz", &[], b"").await {
        assert_eq!(a.status, 0, "served beyond the cap: {a:?}");
    }
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = env.call("GET", "/healthz", &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    let m = env.call("GET", "/metrics", &[], b"").await;
    // The /metrics call above was the only slot free; it was served.
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("tagcast_http_connections_refused_total{reason=\"per_ip\"}")),
        "{}",
        m.body
    );
    drop(held);
    env.server.shutdown().await;
}

// audit H2 (methods): a known path with a method it does not take is 405 with `Allow`, and
// nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_on_a_known_path_is_405() {
    let env = Env::start(Setup::default()).await;
    let cases = [
        ("POST", inst_path("m1"), "GET, PUT, PATCH, DELETE"),
        ("GET", rest::hub_path("messages"), "POST"),
        ("PUT", rest::hub_path("registrations"), "GET, POST"),
        ("DELETE", rest::hub_path("tags/a/registrations"), "GET"),
        ("GET", rest::hub_path("schedulednotifications/x"), "DELETE"),
        ("PUT", rest::hub_path("jobs"), "GET, POST"),
        ("DELETE", rest::hub_path("jobs/j1"), "GET"),
    ];
    for (method, path, allow) in &cases {
        let a = env.full(method, path, &body("m1")).await;
        assert_eq!(a.status, 405, "{method} {path}: {a:?}");
        assert_eq!(a.header("allow"), Some(*allow), "{method} {path}: {a:?}");
    }
    assert_eq!(env.get_status("m1").await, 404);
    // A path that names nothing is still 404.
    let a = env.full("GET", &rest::hub_path("nothing/here"), b"").await;
    assert_eq!(a.status, 404, "{a:?}");
    env.server.shutdown().await;
}

// audit M13: with metrics_listen, /metrics is served there (and only it), not on the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_their_own_listener() {
    let env = Env::start(setup("metrics_listen = \"127.0.0.1:0\"")).await;
    let maddr = env.server.metrics_addr().expect("a metrics listener");
    assert_ne!(maddr, env.addr);
    let a = env.call("GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 404, "{a:?}");
    let a = call(maddr, "GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("tagcast_http_requests_total"), "{}", a.body);
    // Only /metrics: not health, not the API (even with a good token).
    assert_eq!(call(maddr, "GET", "/healthz", &[], b"").await.status, 404);
    let full = sas_for(&format!("http://{maddr}/"), "full", KEY);
    let a = call(maddr, "PUT", &inst_path("m1"), &[full], &body("m1")).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(env.get_status("m1").await, 404);
    env.server.shutdown().await;
}

// audit M13: with metrics_token_file, /metrics on the API listener needs the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_behind_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "bWV0cmljcy10b2tlbi1mb3ItdGhlLWhhcmRlbmluZy10ZXN0cw";
    let file = dir.path().join("metrics.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let env = Env::start(setup(&format!(
        "metrics_token_file = \"{}\"",
        file.display()
    )))
    .await;
    let a = env.call("GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(!a.body.contains("tagcast_http"), "{a:?}");
    let wrong = ("Authorization", format!("Bearer {token}x"));
    assert_eq!(env.call("GET", "/metrics", &[wrong], b"").await.status, 401);
    let short = ("Authorization", format!("Bearer {}", &token[..10]));
    assert_eq!(env.call("GET", "/metrics", &[short], b"").await.status, 401);
    // A SAS token of the hub is not the metrics token.
    let sas = env.full.clone();
    assert_eq!(env.call("GET", "/metrics", &[sas], b"").await.status, 401);
    let right = ("Authorization", format!("Bearer {token}"));
    let a = env.call("GET", "/metrics", &[right], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("tagcast_http_requests_total"), "{}", a.body);
    env.server.shutdown().await;
}

// audit L1, L2: unknown key, bad signature and unknown hub give one 401 detail naming
// nothing; an expired token says so without the server's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_reveal_nothing() {
    let env = Env::start(Setup::default()).await;
    let addr = env.addr;
    let b = body("t1");
    let unknown_key = env
        .call("PUT", &inst_path("t1"), &[sas(addr, "ghost-key", KEY)], &b)
        .await;
    let bad_sig = env
        .call(
            "PUT",
            &inst_path("t1"),
            &[sas(
                addr,
                "full",
                "bm90LXRoZS1rZXktYnV0LWxvbmctZW5vdWdoLXRvLXBhc3M",
            )],
            &b,
        )
        .await;
    let unknown_hub = env
        .call(
            "PUT",
            "/ghost-hub/installations/t1?api-version=2020-06",
            std::slice::from_ref(&env.full),
            &b,
        )
        .await;
    for a in [&unknown_key, &bad_sig, &unknown_hub] {
        assert_eq!(a.status, 401, "{a:?}");
        assert!(!a.detail().is_empty(), "{a:?}");
        for secret in ["ghost-key", "full", "ghost-hub", HUB] {
            assert!(
                !a.detail().to_ascii_lowercase().contains(secret),
                "{secret:?} in {:?}",
                a.detail()
            );
        }
    }
    assert_eq!(unknown_key.detail(), bad_sig.detail());
    assert_eq!(unknown_key.detail(), unknown_hub.detail());
    // Expired an hour ago (beyond the 5 minutes of skew).
    let expired = env
        .call(
            "PUT",
            &inst_path("t1"),
            &[sas_expiring(
                &format!("http://{addr}/"),
                "full",
                KEY,
                unix_now() - 3600,
            )],
            &b,
        )
        .await;
    assert_eq!(expired.status, 401, "{expired:?}");
    let d = expired.detail();
    assert!(d.contains("ExpiredToken"), "{d}");
    let now = unix_now().to_string();
    assert!(
        !d.contains("now") && !d.contains(&now[..6]),
        "the server's clock in {d}"
    );
    assert!(!d.contains(&rest::iso8601(SystemTime::now())[..10]), "{d}");
    assert_eq!(env.get_status("t1").await, 404);
    env.server.shutdown().await;
}

// audit L3: two Authorization headers are refused, even when both are valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let env = Env::start(Setup::default()).await;
    let a = env
        .call(
            "PUT",
            &inst_path("dup"),
            &[env.full.clone(), env.full.clone()],
            &body("dup"),
        )
        .await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.detail().contains("more than one Authorization"), "{a:?}");
    let a = env
        .call(
            "PUT",
            &inst_path("dup"),
            &[env.listen.clone(), env.full.clone()],
            &body("dup"),
        )
        .await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(env.get_status("dup").await, 404);
    env.server.shutdown().await;
}

// audit M7: with public_url, a token's audience must name it, whatever the Host says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_audiences_come_from_the_configuration() {
    let env = Env::start(setup("public_url = \"http://push.example.test\"")).await;
    let addr = env.addr;
    let local = sas(addr, "full", KEY);
    let public = sas_for("http://push.example.test/", "full", KEY);
    let b = body("aud");
    // A token for the address the client connected to: refused, with or without a Host
    // claiming it (or claiming the public name).
    for host in [addr.to_string(), "push.example.test".to_owned()] {
        let a = env
            .call(
                "PUT",
                &inst_path("aud"),
                &[("Host", host.clone()), local.clone()],
                &b,
            )
            .await;
        assert_eq!(a.status, 401, "Host {host}: {a:?}");
    }
    let check = env
        .call("GET", &inst_path("aud"), std::slice::from_ref(&public), b"")
        .await;
    assert_eq!(check.status, 404, "{check:?}");
    // The configured name: accepted, whatever the Host.
    let a = env
        .call(
            "PUT",
            &inst_path("aud"),
            &[("Host", addr.to_string()), public.clone()],
            &b,
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = env.call("GET", &inst_path("aud"), &[public], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    env.server.shutdown().await;
}

// audit L10: a compressed body is refused with 415, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoding_is_refused() {
    let env = Env::start(Setup::default()).await;
    let mut h = vec![env.full.clone(), ("Content-Encoding", "gzip".to_owned())];
    let a = env.call("PUT", &inst_path("gz"), &h, &body("gz")).await;
    assert_eq!(a.status, 415, "{a:?}");
    assert!(a.detail().contains("gzip"), "{a:?}");
    assert_eq!(env.get_status("gz").await, 404);
    // `identity` is no encoding.
    h[1].1 = "identity".to_owned();
    let a = env.call("PUT", &inst_path("gz"), &h, &body("gz")).await;
    assert_eq!(a.status, 200, "{a:?}");
    env.server.shutdown().await;
}

// audit F4, F3: api-version is required and checked; every answer carries a tracking id,
// which error details end with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_is_checked_and_answers_are_tracked() {
    let env = Env::start(Setup::default()).await;
    let full = std::slice::from_ref(&env.full);
    let missing = env
        .call(
            "PUT",
            &format!("/{HUB}/installations/v1"),
            full,
            &body("v1"),
        )
        .await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert!(missing.detail().contains("api-version"), "{missing:?}");
    let old = env
        .call(
            "PUT",
            &format!("/{HUB}/installations/v1?api-version=1999-01"),
            full,
            &body("v1"),
        )
        .await;
    assert_eq!(old.status, 400, "{old:?}");
    assert!(old.detail().contains("1999-01"), "{old:?}");
    assert_eq!(env.get_status("v1").await, 404);

    let answers = vec![
        missing,
        old,
        env.call("GET", &inst_path("v1"), full, b"").await, // 404
        env.call("PUT", &inst_path("v1"), &[], &body("v1")).await, // 401
        env.call("BREW", "/healthz", &[], b"").await,       // 501
        env.call("PUT", &inst_path("v1"), full, &body("v1")).await, // 200
        env.call("GET", &inst_path("v1"), full, b"").await, // 200
        env.call("GET", "/healthz", &[], b"").await,
        env.call("GET", "/readyz", &[], b"").await,
        env.call("GET", "/metrics", &[], b"").await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [400, 400, 404, 401, 501, 200, 200, 200, 200, 200],
        "{answers:#?}"
    );
    let mut seen = std::collections::HashSet::new();
    for a in &answers {
        let id = a
            .header("TrackingId")
            .unwrap_or_else(|| panic!("no TrackingId: {a:?}"));
        assert_eq!(a.header("x-ms-correlation-request-id"), Some(id), "{a:?}");
        assert!(seen.insert(id.to_owned()), "tracking id {id} used twice");
        if a.status >= 400 {
            let suffix = format!("TrackingId:{id},TimeStamp:");
            let detail = a
                .body
                .split_once("<Detail>")
                .and_then(|(_, r)| r.split_once("</Detail>"))
                .map(|(d, _)| d)
                .unwrap_or_else(|| panic!("no Detail: {a:?}"));
            let (_, stamp) = detail
                .rsplit_once(&suffix)
                .unwrap_or_else(|| panic!("{suffix} not in {detail}"));
            // 2024-01-01T00:00:00Z (fractions allowed)
            assert!(
                stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[4] == b'-',
                "{stamp}"
            );
        }
    }
    env.server.shutdown().await;
}

// audit M10: during the drain delay, /readyz answers 503 while the listener still accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drops_before_the_listener_closes() {
    let env = Env::start(setup("drain_delay_secs = 1")).await;
    let addr = env.addr;
    assert!(env.server.is_ready());
    assert_eq!(env.call("GET", "/readyz", &[], b"").await.status, 200);
    let Env { server, bed, .. } = env;
    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    let seen =
        common::eventually(
            Duration::from_millis(800),
            "/readyz 503",
            async || match try_call(addr, "GET", "/readyz", &[], b"").await {
                Ok(a) if a.status == 503 => Ok(a),
                Ok(a) => Err(format!("{a:?}")),
                Err(e) => Err(format!("connection failed: {e}")),
            },
        )
        .await;
    assert!(seen.body.contains("shutting down"), "{seen:?}");
    // Still inside the delay: the listener accepts and serves (after the delay it is gone,
    // as the end of the test shows, so an answer here is proof enough).
    let health = try_call(addr, "GET", "/healthz", &[], b"")
        .await
        .expect("the listener still accepts during the drain delay");
    assert_eq!(health.status, 200);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown within 15 s")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Now the listener is gone.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
    drop(bed);
}

// audit L4: with `max_token_lifetime_secs`, a token valid for longer is refused (the generic
// 401) and nothing is written; a shorter-lived one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_tokens_are_refused_with_a_cap() {
    let env = Env::start(Setup {
        server: "max_token_lifetime_secs = 600\n".into(),
        ..Setup::default()
    })
    .await;
    let audience = format!("http://{}/", env.addr);
    let b = body("life");
    let long = rest::sas_expiring(&audience, "full", KEY, rest::unix_now() + 3600);
    let a = env.call("PUT", &inst_path("life"), &[long], &b).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.detail().starts_with("InvalidSignature"), "{a:?}");
    let short = rest::sas_expiring(&audience, "full", KEY, rest::unix_now() + 300);
    let path = inst_path("life");
    let get = || env.call("GET", &path, std::slice::from_ref(&short), b"");
    assert_eq!(get().await.status, 404, "the refused PUT wrote nothing");
    let a = env
        .call("PUT", &inst_path("life"), std::slice::from_ref(&short), &b)
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(get().await.status, 200);
    env.server.shutdown().await;
}
