//! `backup` and `restore`: the SQLite database copied while the gateway runs, and put back
//! while it is stopped (docs/operations.md, "Backups"). PostgreSQL has pg_dump and pg_restore.
//! Exit codes as the other commands: 0 done, 1 refused or failed (nothing replaced), 2 a
//! configuration these commands cannot work with.

use kuper_bridge::config::{self, Config};
use kuper_bridge_storage::backup::{self as storage, BackupError, Contents, RestoreOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const ERROR: u8 = 1;
const INVALID: u8 = 2;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The file to write: a new file in an existing directory (for example
    /// /var/backups/kuper-bridge/kuper-bridge-$(date +%F).db).
    pub path: PathBuf,
    /// Replace PATH if it already exists (without this flag an existing file is never touched).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup to restore: a file written by `kuper-bridge backup`.
    pub path: PathBuf,
    /// Do not keep the replaced database (by default it is kept beside it as
    /// <file>.before-restore-<UTC time>).
    #[arg(long)]
    pub no_keep: bool,
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    config::load(path).map(|(c, _)| c).map_err(|e| {
        eprintln!("configuration has problems (see `kuper-bridge config check`):\n{e}");
        ExitCode::from(INVALID)
    })
}

/// The configured SQLite file, or the exit code after saying why there is none to work on.
fn sqlite_database(config: &Config, command: &str) -> Result<PathBuf, ExitCode> {
    let url = &config.database.url;
    let shown = kuper_bridge_storage::redact_url(url);
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        eprintln!(
            "error: `kuper-bridge {command}` works on a SQLite database; database.url is PostgreSQL ({shown}). \
             Back PostgreSQL up with `pg_dump -Fc` and restore it with `pg_restore` (docs/operations.md, \"Backups\")."
        );
        return Err(ExitCode::from(INVALID));
    }
    // sqlite_file also makes a path of other URLs.
    let file = url.starts_with("sqlite:").then(|| kuper_bridge_storage::sqlite_file(url)).flatten();
    file.ok_or_else(|| {
        eprintln!("error: `kuper-bridge {command}` works on a SQLite database file; database.url is {shown}");
        ExitCode::from(INVALID)
    })
}

/// A new database made by root in the service's directory is root's, and the service then
/// cannot write it (a replaced one keeps its owner: storage gives the copy the old owner).
#[cfg(unix)]
fn foreign_owner(database: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::metadata(database).ok()?;
    let dir = std::fs::metadata(database.parent()?).ok()?;
    (file.uid() != dir.uid()).then(|| {
        format!(
            "{} belongs to uid {}, its directory to uid {}; if the service runs as the directory's owner, give it \
             the database and its lock file: `chown --reference={} {} {}.lock`",
            database.display(),
            file.uid(),
            dir.uid(),
            database.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            database.display(),
            database.display()
        )
    })
}

#[cfg(not(unix))]
fn foreign_owner(_: &Path) -> Option<String> {
    None
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit == "bytes" {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {unit} ({bytes} bytes)")
    }
}

fn print_contents(bytes: u64, contents: &Contents) {
    println!("size:       {}", size(bytes));
    println!("orders:     {}", contents.orders);
    println!("outbox:     {} pending, {} dead", contents.pending, contents.dead);
    println!("schema:     migration {}", contents.migration);
}

/// The storage call on a thread where blocking is expected: the copy and the checks read the
/// whole database.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> anyhow::Result<Result<T, BackupError>> {
    Ok(tokio::task::spawn_blocking(work).await?)
}

pub async fn backup(config_path: Option<&Path>, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let config = match load(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let database = match sqlite_database(&config, "backup") {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let (source, dest, overwrite) = (database.clone(), args.path.clone(), args.overwrite);
    match blocking(move || storage::backup_sqlite(&source, &dest, overwrite)).await? {
        Ok(report) => {
            println!(
                "backup of {} written to {}",
                absolute(&report.database).display(),
                absolute(&report.path).display()
            );
            print_contents(report.bytes, &report.contents);
            Ok(ExitCode::SUCCESS)
        }
        Err(BackupError::Exists(path)) => {
            eprintln!(
                "error: {} already exists; nothing was written (choose a new name, or pass --overwrite to replace it)",
                path.display()
            );
            Ok(ExitCode::from(ERROR))
        }
        Err(e) => {
            eprintln!("error: backup failed: {e}; nothing was written to {}", args.path.display());
            Ok(ExitCode::from(ERROR))
        }
    }
}

pub async fn restore(config_path: Option<&Path>, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = match load(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let database = match sqlite_database(&config, "restore") {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let refused = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        eprintln!("nothing was changed: {} is as it was", database.display());
        Ok(ExitCode::from(ERROR))
    };
    // Everything about the backup before anything about the database.
    let path = args.path.clone();
    let checked = match blocking(move || storage::check_backup(&path)).await? {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        return refused(&format!(
            "the database's directory {} does not exist; create it, owned by the service's user, first",
            dir.display()
        ));
    }
    // Held until the new database is in place: every `serve` takes it, so no gateway starts on
    // the file meanwhile, and one that serves it now refuses the restore.
    let _lock = match kuper_bridge::lock_sqlite(&config.database.url) {
        Ok(lock) => lock,
        Err(e) => {
            return refused(&format!("{e:#}; stop the gateway first (for example `sudo systemctl stop kuper-bridge`)"))
        }
    };
    let options = RestoreOptions { keep_previous: !args.no_keep };
    let target = database.clone();
    let report = match blocking(move || storage::restore_sqlite(&checked, &target, &options)).await? {
        Ok(r) => r,
        Err(e) => return refused(&e),
    };
    println!("restored {} into {}", absolute(&args.path).display(), report.database.display());
    print_contents(report.bytes, &report.contents);
    if report.contents.pending > 0 {
        // Some may have reached Kuper after the backup was taken (storage::restore_sqlite).
        println!(
            "in doubt:   the {} pending record(s) go out again when the gateway starts; Kuper's \"already applied\" \
             answers to them count as delivered",
            report.contents.pending
        );
    }
    match &report.kept {
        Some(kept) => println!("kept:       the replaced database, as {}", kept.display()),
        None if args.no_keep => println!("kept:       nothing (--no-keep)"),
        None => {}
    }
    for note in &report.notes {
        println!("note:       {note}");
    }
    if let Some(warning) = foreign_owner(&report.database) {
        println!("warning:    {warning}");
    }
    println!("start the gateway on it (for example `sudo systemctl start kuper-bridge`)");
    Ok(ExitCode::SUCCESS)
}
