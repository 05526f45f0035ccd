//! What every run shares from start to end: progress lines on stderr, and what becomes of its
//! scratch directory and database at the end.

use kuper_bridge_bench::database::{pg_server, Database};

/// The end of a run: its directory and PostgreSQL database kept (`--keep`, said where) or
/// removed (the directory when `tmp` drops).
pub(crate) async fn keep_or_drop(keep: bool, tmp: kuper_bridge_bench::scratch::ScratchDir, db: &Database) {
    if keep {
        let kept = tmp.keep();
        db.keep();
        progress(format!(
            "kept {}{}",
            kept.display(),
            db.pg_name().map(|n| format!(" and database {n} on {}", pg_server())).unwrap_or_default()
        ));
    } else if let Err(e) = db.drop_database().await {
        progress(format!("could not drop the benchmark database: {e:#}"));
    }
}

pub(crate) fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", chrono::Utc::now().format("%H:%M:%S"), msg.as_ref());
}
