//! `kuper-bridge operators …` through the real binary, on the backend the suite runs on
//! (SQLite, or PostgreSQL with `KUPER_BRIDGE_TEST_BACKEND=postgres`): accounts are added,
//! listed without their hash, disabled, enabled and given a new password; the password comes
//! from standard input or a file, never argv; exit codes are the documented ones (0 ok,
//! 2 invalid arguments, 3 not found).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::{drop_test_database, test_database_url, text_rows};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

struct Db {
    dir: tempfile::TempDir,
    url: String,
    config: std::path::PathBuf,
}

impl Db {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = test_database_url(dir.path()).await;
        let config = dir.path().join("cli.toml");
        std::fs::write(&config, format!("[database]\nurl = {url:?}\n")).unwrap();
        Self { dir, url, config }
    }

    /// Runs the real binary with `stdin` as its standard input; returns (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("KUPER_BRIDGE_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kuper-bridge");
        let mut input = child.stdin.take().unwrap();
        // The command may refuse and exit before it reads a password (a taken name, a bad
        // role): writing to it then fails with a broken pipe, which is no failure of the test.
        let _ = input.write_all(stdin.as_bytes()).await;
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// The stored hash of `name`, read from the database directly.
    async fn hash_of(&self, name: &str) -> String {
        let rows = text_rows(&self.url, &format!("SELECT password_hash FROM operators WHERE name = '{name}'")).await;
        rows[0][0].clone().unwrap()
    }
}

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_added_listed_disabled_and_given_new_passwords() {
    let db = Db::new().await;

    // Standard input: one line, its line break not part of the password.
    let (code, out, err) = db.cli(&["operators", "add", "anna", "--role", "desk"], &format!("{PASSWORD}\n")).await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("operator anna added with role desk"), "{out}");
    let hash = db.hash_of("anna").await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(kuper_bridge_app::operators::verify_password(PASSWORD, &hash), "the newline was stripped");

    // A file: CRLF stripped too.
    let file = db.dir.path().join("pw");
    std::fs::write(&file, "another password 2\r\n").unwrap();
    let file_arg = file.to_str().unwrap();
    let (code, out, err) =
        db.cli(&["operators", "add", "Борис", "--role", "admin", "--password-file", file_arg], "").await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(kuper_bridge_app::operators::verify_password("another password 2", &db.hash_of("Борис").await));

    let (code, out, _) = db.cli(&["operators", "list"], "").await;
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["name", "role", "disabled", "created"]);
    assert_eq!(lines[1][..3], ["anna", "desk", "no"]);
    assert_eq!(lines[2][..3], ["Борис", "admin", "no"]);
    assert!(!out.contains("argon2") && !out.contains(&hash), "never the hash: {out}");

    let (code, out, _) = db.cli(&["operators", "disable", "anna"], "").await;
    assert_eq!((code, out.trim()), (0, "operator anna disabled"));
    let (_, out, _) = db.cli(&["operators", "list"], "").await;
    assert!(out.lines().any(|l| l.split_whitespace().take(3).eq(["anna", "desk", "yes"])), "{out}");
    let (code, out, _) = db.cli(&["operators", "enable", "anna"], "").await;
    assert_eq!((code, out.trim()), (0, "operator anna enabled"));
    let (_, out, _) = db.cli(&["operators", "list"], "").await;
    assert!(out.lines().any(|l| l.split_whitespace().take(3).eq(["anna", "desk", "no"])), "{out}");

    let (code, out, err) = db.cli(&["operators", "passwd", "anna"], "a brand new one\n").await;
    assert_eq!(code, 0, "{out} {err}");
    let new_hash = db.hash_of("anna").await;
    assert_ne!(new_hash, hash);
    assert!(kuper_bridge_app::operators::verify_password("a brand new one", &new_hash));
    assert!(!kuper_bridge_app::operators::verify_password(PASSWORD, &new_hash), "the old password is gone");

    drop_test_database(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_command_exit_codes() {
    let db = Db::new().await;
    let (code, _, err) = db.cli(&["operators", "add", "anna", "--role", "viewer"], PASSWORD).await;
    assert_eq!(code, 0, "a last line without a line break is fine: {err}");
    let hash = db.hash_of("anna").await;

    for (args, stdin, expected, message) in [
        (&["operators", "add", "anna", "--role", "admin"][..], PASSWORD, 2, "operator anna already exists"),
        (&["operators", "add", "bob", "--role", "boss"], PASSWORD, 2, "viewer, desk, operator, admin"),
        (&["operators", "add", "bob", "--role", "desk"], "", 2, "the password is empty"),
        (&["operators", "add", "bob", "--role", "desk"], "\n", 2, "the password is empty"),
        (&["operators", "add", "bob", "--role", "desk"], "short\n", 2, "at least 10 characters"),
        (&["operators", "add", "bob k", "--role", "desk"], PASSWORD, 2, "space"),
        (&["operators", "add", "bob", "--role", "desk", "--password-file", "/nonexistent/pw"], "", 2, "cannot read"),
        (&["operators", "add", "bob"], PASSWORD, 2, "--role"),
        (&["operators", "passwd", "anna"], "short\n", 2, "at least 10 characters"),
        (&["operators", "passwd", "nobody"], PASSWORD, 3, "operator nobody not found"),
        (&["operators", "disable", "nobody"], "", 3, "operator nobody not found"),
        (&["operators", "enable", "nobody"], "", 3, "operator nobody not found"),
    ] {
        let (code, out, err) = db.cli(args, stdin).await;
        assert_eq!(code, expected, "{args:?}: {out} {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    // Nothing refused changed anything.
    let (_, out, _) = db.cli(&["operators", "list"], "").await;
    assert_eq!(out.lines().count(), 2, "only anna: {out}");
    assert_eq!(db.hash_of("anna").await, hash, "a refused passwd kept the old hash");

    // The password never goes on the command line: there is no flag for it.
    let (code, _, err) = db.cli(&["operators", "add", "bob", "--role", "desk", "--password", PASSWORD], "").await;
    assert_eq!(code, 2, "{err}");
    drop_test_database(&db.url).await;
}
