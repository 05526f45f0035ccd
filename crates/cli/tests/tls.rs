//! HTTPS without a proxy (`[server.tls]`): the real binary serves /healthz over TLS with a
//! certificate made here, refuses plain HTTP on that port, and on SIGHUP presents a new
//! certificate to new connections while an open keep-alive connection goes on working. A bad
//! certificate stops the start (and `config check`) with a message that names the file; a bad
//! reload keeps the old certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge::config::{Config, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A test CA and the server certificates it signs (for 127.0.0.1).
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate: PEM for the files, DER to compare with what a client was shown.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        Self { ca }
    }

    fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        let cert = params.signed_by(&key, &*self.ca).expect("server certificate");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    fn client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).expect("CA as a root");
        reqwest::Client::builder()
            .add_root_certificate(root)
            .tls_info(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self { cert: dir.join("fullchain.pem"), key: dir.join("privkey.pem") }
    }

    /// As certbot and cp do it: the files are rewritten in place.
    fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&self.key, &leaf.key_pem).expect("write key");
    }

    fn config(&self) -> ServerTls {
        ServerTls { cert_file: self.cert.clone(), key_file: self.key.clone() }
    }
}

/// The certificate the server showed on the connection that carried `response`.
fn presented(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection with a peer certificate")
        .to_vec()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_https(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status().is_success() => return r,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(r) => panic!("/healthz over HTTPS answered {}", r.status()),
            Err(e) => panic!("/healthz over HTTPS failed: {e:?}"),
        }
    }
}

fn hangup(child: &tokio::process::Child) {
    let pid = child.id().expect("the gateway is running");
    let status = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().expect("kill runs");
    assert!(status.success(), "kill -HUP {pid} failed");
}

async fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{needle:?} not logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config whose Kuper is never called (nothing is queued) on the test's database.
async fn tls_config(dir: &Path, files: &Files, port: u16) -> Config {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut config = base_config(dir, &nowhere).await;
    config.server.listen = format!("127.0.0.1:{port}");
    config.server.tls = Some(files.config());
    config.console.secure_cookie = true;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (first, second) = (pki.leaf(), pki.leaf());
    let files = Files::in_dir(dir.path());
    files.write(&first);
    let port = free_port();
    let config = tls_config(dir.path(), &files, port).await;
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let log = dir.path().join("gateway.log");
    let mut child = spawn_gateway_logging(&config_path, dir.path(), "info", Some(&log)).await;
    let url = format!("https://127.0.0.1:{port}");

    // A client that keeps its connection: every request below goes over the same one.
    let kept = pki.client();
    let response = wait_https(&kept, &url).await;
    assert_eq!(presented(&response), first.der, "the configured certificate is served");
    assert!(!response.text().await.unwrap_or_default().is_empty(), "/healthz answers a body");
    wait_for_log(&log, "serving HTTPS").await;

    // Plain HTTP on the HTTPS port is no HTTP exchange at all.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    match plain.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
        Ok(r) => panic!("plain HTTP on the HTTPS port answered {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "plain HTTP should fail at once, not hang: {e:?}"),
    }

    files.write(&second);
    hangup(&child);
    wait_for_log(&log, "TLS certificate reloaded").await;
    let fresh = pki.client().get(format!("{url}/healthz")).send().await.expect("a new connection after the reload");
    assert!(fresh.status().is_success());
    assert_eq!(presented(&fresh), second.der, "a new connection is shown the new certificate");

    let again = kept.get(format!("{url}/healthz")).send().await.expect("the kept-alive connection still works");
    assert!(again.status().is_success());
    assert_eq!(presented(&again), first.der, "the open connection was not dropped: it still has its handshake");

    // A broken file at the next reload: logged, and the previous certificate stays.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    hangup(&child);
    let text = wait_for_log(&log, "TLS certificate reload failed").await;
    assert!(text.contains("holds no certificate"), "the log says what is wrong:\n{text}");
    let after = pki.client().get(format!("{url}/healthz")).send().await.expect("still serving after a bad reload");
    assert_eq!(presented(&after), second.der, "the last good certificate is kept");
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP did not end the process");
    assert!(!text.contains("BEGIN PRIVATE KEY"), "no key material in the log");

    child.kill().await.unwrap();
    let _ = child.wait().await;
    drop_test_database(&config.database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_stops_the_start_and_config_check_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (first, second) = (pki.leaf(), pki.leaf());
    let files = Files::in_dir(dir.path());
    let mut config = tls_config(dir.path(), &files, free_port()).await;
    // No database is opened: the configuration is refused first.
    drop_test_database(&config.database.url).await;
    config.database.url = format!("sqlite://{}", dir.path().join("never.db").display());
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let bin = env!("CARGO_BIN_EXE_kuper-bridge");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("the binary runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let missing_cert = format!("server.tls.cert_file: cannot read {}", files.cert.display());
    let missing_key = format!("server.tls.key_file: cannot read {}", files.key.display());
    // (what, the cert file's content, the key file's content, what the output must say);
    // None: no such file.
    let cases = [
        ("missing files", None, None, vec![missing_cert.as_str(), missing_key.as_str()]),
        (
            "a key in place of the certificate",
            Some(first.key_pem.as_str()),
            Some(first.key_pem.as_str()),
            vec!["holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"],
        ),
        (
            "a certificate in place of the key",
            Some(first.cert_pem.as_str()),
            Some(first.cert_pem.as_str()),
            vec!["server.tls.key_file", "holds no private key"],
        ),
        (
            "the key of another certificate",
            Some(first.cert_pem.as_str()),
            Some(second.key_pem.as_str()),
            vec!["does not belong to the first certificate"],
        ),
    ];
    for (what, cert, key, needles) in cases {
        for (path, content) in [(&files.cert, cert), (&files.key, key)] {
            match content {
                Some(text) => std::fs::write(path, text).unwrap(),
                None => assert!(!path.exists()),
            }
        }
        for args in [&["config", "check"][..], &["serve"][..]] {
            let (code, text) = run(args);
            assert_eq!(code, Some(2), "{what}: `{}` exits 2:\n{text}", args.join(" "));
            for needle in &needles {
                assert!(text.contains(needle), "{what}: `{}` does not say {needle:?}:\n{text}", args.join(" "));
            }
        }
    }
    files.write(&first);
    let (code, text) = run(&["config", "check"]);
    assert_eq!(code, Some(0), "a good pair passes:\n{text}");
    assert!(text.contains("tls:             HTTPS, certificate"), "{text}");
    assert!(!dir.path().join("never.db").exists(), "a refused start opened no database");
}

/// Graceful shutdown does not wait for a client stuck in its TLS handshake (a scanner, a
/// client that connected and went silent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_silent_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let files = Files::in_dir(dir.path());
    files.write(&pki.leaf());
    let mut config = tls_config(dir.path(), &files, 0).await;
    config.server.header_read_timeout_ms = 30_000;
    let app = start_app(&config).await;
    assert!(app.url().starts_with("https://"), "{}", app.url());
    let ok = pki.client().get(format!("{}/healthz", app.url())).send().await.expect("HTTPS in process");
    assert!(ok.status().is_success());
    let _silent = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop()).await.expect("stopped without waiting 30 s");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop_test_database(&config.database.url).await;
}
