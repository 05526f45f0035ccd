//! Backups of a SQLite database that restore (issue #13, item 5).
//!
//! [`backup_sqlite`] copies a live database with SQLite's online backup API: the whole copy is
//! one read transaction, so it is a consistent snapshot, and in WAL mode a reader never blocks
//! the gateway's writer. [`check_backup`] reads a backup without changing it (not even a -wal
//! or -shm beside it) and refuses anything that is not a whole kuper-bridge database;
//! [`restore_sqlite`] then puts a copy of it in the database's place atomically, refusing while
//! any other connection has the database open. docs/decisions.md, "Backups that restore".

use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The migrations this build knows, to refuse a backup that a newer kuper-bridge made (its
/// gateway would refuse to start on it) before the database is replaced.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// How long the snapshot may wait for a lock. In WAL mode a reader only waits while another
/// connection recovers the log, so this is a bound on something rare, not a queue.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists and overwriting it was not asked for.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("there is no SQLite database at {}", .0.display())]
    NoDatabase(PathBuf),
    /// Another connection has the database open (a gateway, a command, an `sqlite3` session).
    #[error("{0}")]
    InUse(String),
    /// Not a SQLite database, not kuper-bridge's, damaged, or from a newer version.
    #[error("{} is not a usable kuper-bridge database: {reason}", path.display())]
    NotKuperBridge { path: PathBuf, reason: String },
    /// Refused before anything was written (a path that cannot work).
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Sqlite {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

fn sqlite_error(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Sqlite { what, source }
}

/// What a database holds, for the operator to recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    pub orders: i64,
    /// Outbox records (notifications and forwarded events) not yet delivered.
    pub pending: i64,
    /// Outbox records waiting for an operator's decision.
    pub dead: i64,
    /// The latest migration applied.
    pub migration: i64,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub database: PathBuf,
    pub path: PathBuf,
    pub bytes: u64,
    pub contents: Contents,
}

/// A file [`check_backup`] found to be a whole kuper-bridge database this build can run on.
#[derive(Debug, Clone)]
pub struct CheckedBackup {
    pub path: PathBuf,
    pub bytes: u64,
    pub contents: Contents,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Keep the replaced database as `<file>.before-restore-<UTC time>`.
    pub keep_previous: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub database: PathBuf,
    pub bytes: u64,
    pub contents: Contents,
    /// Pending records marked "in doubt" ([`restore_sqlite`] says why).
    pub marked_in_doubt: usize,
    /// Where the replaced database was kept.
    pub kept: Option<PathBuf>,
    /// What else the operator should know (stale files removed, a damaged database replaced).
    pub notes: Vec<String>,
}

/// `<path><suffix>`: SQLite names a database's companions (`-wal`, `-shm`, `-journal`) so.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupError::Refused(format!("{} does not name a file", path.display())))
}

/// Also through a hard link, where the paths differ.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (fs::metadata(a), fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(io_error(format!("cannot look at {}", path.display())))
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(format!("cannot remove {}", path.display()))(e)),
    }
}

fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io_error(format!("cannot fsync {}", path.display())))
}

/// A rename or a new link is durable only once its directory is.
fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("cannot fsync the directory {}", dir.display())))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A new file only its owner can read: a backup holds customers' names and phone numbers.
fn create_private(path: &Path) -> Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_error(format!("cannot create {}", path.display())))
}

/// A file of ours in the destination's directory until it is renamed into place; removed,
/// with whatever SQLite made beside it, if anything fails first.
struct Scratch {
    path: PathBuf,
    armed: bool,
}

impl Scratch {
    /// `<dir>/.<name>.<what>-<pid>`: hidden, and one per process, so two commands never share one.
    fn new(dir: &Path, name: &str, what: &str) -> Result<Self> {
        let path = dir.join(format!(".{name}.{what}-{}", std::process::id()));
        // Left by an earlier run of a process with the same id that was killed: ours to reuse.
        let scratch = Self { path, armed: true };
        scratch.clean()?;
        Ok(scratch)
    }

    fn clean(&self) -> Result<()> {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            remove_if_exists(&beside(&self.path, suffix))?;
        }
        Ok(())
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.clean();
        }
    }
}

/// Percent-encodes a path for a `file:` URI (`?`, `#` and `%` are legal in file names).
fn file_uri(path: &Path, query: &str) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(io_error(format!("cannot make {} absolute", path.display())))?;
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(absolute.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = absolute.to_string_lossy().replace('\\', "/").into_bytes();
    let mut uri = String::from("file:");
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push('?');
    uri.push_str(query);
    Ok(uri)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
}

fn in_use(path: &Path) -> BackupError {
    BackupError::InUse(format!(
        "{} is open in another process (a running gateway, another kuper-bridge command or an sqlite3 session); \
         stop it first",
        path.display()
    ))
}

/// Closes a connection, so its files are final before they are synced, renamed or counted.
fn close(conn: Connection, path: &Path) -> Result<()> {
    conn.close().map_err(|(_, e)| sqlite_error(format!("cannot close {}", path.display()))(e))
}

/// Refuses a database that is not kuper-bridge's or that this build cannot run on, and says
/// what it holds.
fn contents(conn: &Connection, path: &Path) -> Result<Contents> {
    let refuse = |reason: String| BackupError::NotKuperBridge { path: path.to_path_buf(), reason };
    let unreadable = |e: rusqlite::Error| refuse(format!("it cannot be read ({e})"));
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(unreadable)?;
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(refuse("it has no migrations table (_sqlx_migrations)".into()));
    }
    let applied: Vec<(i64, bool, Vec<u8>)> = conn
        .prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .map_err(unreadable)?;
    for (version, success, checksum) in &applied {
        if !success {
            return Err(refuse(format!("its migration {version} did not complete")));
        }
        match MIGRATOR.iter().find(|m| m.version == *version && !m.migration_type.is_down_migration()) {
            None => {
                return Err(refuse(format!(
                    "it was made by a newer kuper-bridge (migration {version} is unknown to this version); \
                     restore it with that version"
                )))
            }
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return Err(refuse(format!("its migration {version} ({}) differs from this version's", m.description)))
            }
            Some(_) => {}
        }
    }
    let migration = applied.last().map(|(v, _, _)| *v).ok_or_else(|| refuse("no migration was ever applied".into()))?;
    for table in ["orders", "outbox", "events"] {
        if !tables.iter().any(|t| t == table) {
            return Err(refuse(format!("it has no {table} table")));
        }
    }
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(unreadable);
    Ok(Contents {
        orders: count("SELECT count(*) FROM orders")?,
        pending: count("SELECT count(*) FROM outbox WHERE status = 'pending'")?,
        dead: count("SELECT count(*) FROM outbox WHERE status = 'dead'")?,
        migration,
    })
}

/// `quick_check` or `integrity_check`: `ok`, or the first problems SQLite found.
fn check_integrity(conn: &Connection, pragma: &str, path: &Path) -> Result<()> {
    let refuse = |reason: String| BackupError::NotKuperBridge { path: path.to_path_buf(), reason };
    let found: Vec<String> = conn
        .prepare(&format!("PRAGMA {pragma}(10)"))
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| refuse(format!("{pragma} could not read it ({e})")))?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(refuse(format!("{pragma} failed: {}", found.join("; "))))
}

/// Copies the SQLite database `database` to `dest` while a gateway may be writing it.
///
/// One `sqlite3_backup_step(-1)`: the whole copy is one read transaction, a consistent
/// snapshot that never restarts, and in WAL mode it does not block the writer (checkpoints
/// wait for it, so the -wal grows for as long as the copy takes). The copy is written to a
/// hidden file beside `dest`, switched to a rollback journal (so it is one self-contained
/// file), checked (`quick_check`, the migrations) and fsynced, then linked into place; `dest`
/// never holds a partial copy. An existing `dest` is refused unless `overwrite`.
pub fn backup_sqlite(database: &Path, dest: &Path, overwrite: bool) -> Result<BackupReport> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_path_buf()));
    }
    if dest.is_dir() {
        return Err(BackupError::Refused(format!(
            "{} is a directory; give the backup's file name, e.g. {}",
            dest.display(),
            dest.join("kuper-bridge.db").display()
        )));
    }
    if exists(dest)? {
        if same_file(database, dest) {
            return Err(BackupError::Refused(format!("{} is the database itself", dest.display())));
        }
        if !overwrite {
            return Err(BackupError::Exists(dest.to_path_buf()));
        }
    }
    let dir = directory_of(dest);
    if !dir.is_dir() {
        return Err(BackupError::Refused(format!("the directory {} does not exist", dir.display())));
    }
    let scratch = Scratch::new(&dir, &file_name_of(dest)?, "partial")?;
    drop(create_private(&scratch.path)?);

    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let source = Connection::open_with_flags(database, flags)
        .map_err(sqlite_error(format!("cannot open {}", database.display())))?;
    source.busy_timeout(Duration::from_secs(5)).map_err(sqlite_error("cannot set busy_timeout"))?;
    // Belt and braces: this connection exists to read.
    source.execute_batch("PRAGMA query_only = ON").map_err(sqlite_error("cannot set query_only"))?;
    let mut copy = Connection::open_with_flags(&scratch.path, flags)
        .map_err(sqlite_error(format!("cannot open {}", scratch.path.display())))?;
    {
        let backup =
            rusqlite::backup::Backup::new(&source, &mut copy).map_err(sqlite_error("cannot start the backup"))?;
        let started = Instant::now();
        loop {
            use rusqlite::backup::StepResult;
            match backup.step(-1).map_err(sqlite_error(format!("backup of {} failed", database.display())))? {
                StepResult::Done => break,
                StepResult::More => {}
                // Only while another connection recovers the log or takes an exclusive lock.
                _ if started.elapsed() > SNAPSHOT_PATIENCE => {
                    return Err(in_use(database));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    close(source, database)?;
    // The copy carries the live database's WAL flag; a rollback-journal file needs no -wal or
    // -shm beside it, wherever it is copied or opened later. A restore switches back to WAL.
    let mode: String = copy
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(sqlite_error("cannot switch the copy to a rollback journal"))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Refused(format!("the copy stayed in journal mode {mode}")));
    }
    check_integrity(&copy, "quick_check", &scratch.path)?;
    let contents = contents(&copy, database)?;
    close(copy, &scratch.path)?;
    fsync_file(&scratch.path)?;
    let bytes = fs::metadata(&scratch.path).map_err(io_error(format!("cannot read {}", scratch.path.display())))?.len();

    if overwrite {
        fs::rename(&scratch.path, dest).map_err(io_error(format!("cannot move the copy to {}", dest.display())))?;
    } else {
        // A link fails when `dest` appeared meanwhile, where a rename would replace it.
        match fs::hard_link(&scratch.path, dest) {
            Ok(()) => {
                remove_if_exists(&scratch.path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(BackupError::Exists(dest.to_path_buf())),
            // File systems without hard links: the check above stands.
            Err(_) => {
                if exists(dest)? {
                    return Err(BackupError::Exists(dest.to_path_buf()));
                }
                fs::rename(&scratch.path, dest)
                    .map_err(io_error(format!("cannot move the copy to {}", dest.display())))?;
            }
        }
    }
    scratch.disarm();
    fsync_dir(&dir)?;
    Ok(BackupReport { database: database.to_path_buf(), path: dest.to_path_buf(), bytes, contents })
}

/// Reads `path` without changing anything (`immutable`: no lock, no -wal or -shm made beside
/// it) and refuses what a gateway could not run on: not SQLite, not kuper-bridge's (no
/// migrations table, a core table missing), damaged (`integrity_check`), an incomplete copy of
/// a live database (a non-empty -wal beside it), or made by a newer version.
pub fn check_backup(path: &Path) -> Result<CheckedBackup> {
    let refuse = |reason: &str| BackupError::NotKuperBridge { path: path.to_path_buf(), reason: reason.into() };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BackupError::NoDatabase(path.to_path_buf())),
        Err(e) => return Err(io_error(format!("cannot read {}", path.display()))(e)),
    };
    if !meta.is_file() {
        return Err(refuse("it is not a file"));
    }
    let mut magic = [0u8; 16];
    let read = File::open(path)
        .and_then(|mut f| {
            let mut n = 0;
            while n < magic.len() {
                match f.read(&mut magic[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        })
        .map_err(io_error(format!("cannot read {}", path.display())))?;
    if read < magic.len() || &magic != SQLITE_MAGIC {
        return Err(refuse("it is not a SQLite database"));
    }
    let wal = beside(path, "-wal");
    if fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError::NotKuperBridge {
            path: path.to_path_buf(),
            reason: format!(
                "a write-ahead log lies beside it ({}): it is a live database or a copy of one, whose latest \
                 changes may be only in that log; make a backup of it with `kuper-bridge backup`",
                wal.display()
            ),
        });
    }
    let conn = Connection::open_with_flags(
        file_uri(path, "mode=ro&immutable=1")?,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| BackupError::NotKuperBridge {
        path: path.to_path_buf(),
        reason: format!("it cannot be opened ({e})"),
    })?;
    // The cheap refusal first: a stranger's database is not checked page by page.
    let contents = contents(&conn, path)?;
    check_integrity(&conn, "integrity_check", path)?;
    close(conn, path)?;
    Ok(CheckedBackup { path: path.to_path_buf(), bytes: meta.len(), contents })
}

/// Replaces the SQLite database at `database` with a copy of a checked backup.
///
/// The caller keeps gateways away first (the CLI holds `<db>.lock`, which every `serve` takes).
/// The copy is made beside the database, its pending outbox records marked "in doubt",
/// switched to WAL, fsynced; then, holding SQLite's exclusive lock on the old database (which
/// fails while any other connection has it open: in WAL mode every connection keeps a shared
/// lock for its whole life), the old database's log is folded into it, its stale -shm removed,
/// it is kept as `<file>.before-restore-<UTC time>` (a hard link) unless told not to, and the
/// copy is renamed over it, the directory fsynced. `database` always names a whole database.
///
/// Why "in doubt": the backup is older than what Kuper has seen. A notification pending in
/// it may have been delivered after the backup was taken; Kuper answers such a repeat with a
/// "repeat" 422, which the dispatcher counts as delivered only for a record in doubt (an
/// attempt may have reached Kuper) and would otherwise make a dead letter.
pub fn restore_sqlite(backup: &CheckedBackup, database: &Path, options: &RestoreOptions) -> Result<RestoreReport> {
    // The file a symbolic link names is replaced, not the link.
    let database = match database.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => database.to_path_buf(),
        Err(e) => return Err(io_error(format!("cannot look at {}", database.display()))(e)),
    };
    let previous = match fs::metadata(&database) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => return Err(BackupError::Refused(format!("{} is not a file", database.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(format!("cannot look at {}", database.display()))(e)),
    };
    if previous.is_some() && same_file(&backup.path, &database) {
        return Err(BackupError::Refused(format!("{} is the configured database itself", backup.path.display())));
    }
    let dir = directory_of(&database);
    if !dir.is_dir() {
        return Err(BackupError::Refused(format!("the database's directory {} does not exist", dir.display())));
    }
    let scratch = Scratch::new(&dir, &file_name_of(&database)?, "restore")?;
    {
        let mut from = File::open(&backup.path).map_err(io_error(format!("cannot read {}", backup.path.display())))?;
        let mut to = create_private(&scratch.path)?;
        io::copy(&mut from, &mut to).map_err(io_error(format!("cannot copy into {}", scratch.path.display())))?;
    }
    let marked_in_doubt = prepare_copy(&scratch.path)?;
    #[cfg(unix)]
    if let Some(previous) = &previous {
        take_over_ownership(&scratch.path, previous, &database)?;
    }
    fsync_file(&scratch.path)?;

    let mut notes = Vec::new();
    let kept = match previous {
        None => {
            // Companions of no database (it was deleted without them): they must not meet the new one.
            for suffix in ["-wal", "-shm", "-journal"] {
                let stale = beside(&database, suffix);
                if remove_if_exists(&stale)? {
                    notes.push(format!("removed {}, left by a database that no longer exists", stale.display()));
                }
            }
            rename_into_place(&scratch.path, &database, &dir, &mut notes)?;
            None
        }
        Some(_) => replace_existing(&scratch.path, &database, &dir, options, &mut notes)?,
    };
    scratch.disarm();
    let bytes = fs::metadata(&database).map_err(io_error(format!("cannot read {}", database.display())))?.len();
    Ok(RestoreReport { database, bytes, contents: backup.contents, marked_in_doubt, kept, notes })
}

/// Marks the copy's pending records in doubt and switches it to WAL, the gateway's mode, so
/// that whoever opens it first never needs a rollback journal (a name the old database's
/// connection may still remove as it closes). Returns how many records were marked.
fn prepare_copy(path: &Path) -> Result<usize> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite_error(format!("cannot open {}", path.display())))?;
    let marked = conn
        .execute("UPDATE outbox SET in_doubt = 1 WHERE status = 'pending' AND in_doubt = 0", [])
        .map_err(sqlite_error("cannot mark the pending notifications in doubt"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sqlite_error("cannot switch the copy to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BackupError::Refused(format!("the copy stayed in journal mode {mode}")));
    }
    // The last connection to close checkpoints and removes the -wal and -shm.
    close(conn, path)?;
    let wal = beside(path, "-wal");
    if fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError::Refused(format!("{} was not folded into the copy", wal.display())));
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_exists(&beside(path, suffix))?;
    }
    Ok(marked)
}

/// The service runs as its own user: a copy made by root must still be the service's to write,
/// with the replaced file's permissions. Refused (nothing replaced) when it cannot be given.
#[cfg(unix)]
fn take_over_ownership(copy: &Path, previous: &fs::Metadata, database: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    fs::set_permissions(copy, fs::Permissions::from_mode(previous.mode() & 0o7777))
        .map_err(io_error(format!("cannot set the permissions of {}", copy.display())))?;
    let mine = fs::metadata(copy).map_err(io_error(format!("cannot read {}", copy.display())))?;
    if (mine.uid(), mine.gid()) != (previous.uid(), previous.gid()) {
        std::os::unix::fs::chown(copy, Some(previous.uid()), Some(previous.gid())).map_err(|e| {
            BackupError::Refused(format!(
                "the restored database would belong to uid {} and {} belongs to uid {} ({e}); run the restore \
                 as the database's owner (the service's user, e.g. `sudo -u kuper-bridge kuper-bridge restore …`) \
                 or as root",
                mine.uid(),
                database.display(),
                previous.uid()
            ))
        })?;
    }
    Ok(())
}

/// The point of no return. An error means the database was not replaced; once the rename is
/// done, a directory that cannot be fsynced is reported, not an error.
fn rename_into_place(copy: &Path, database: &Path, dir: &Path, notes: &mut Vec<String>) -> Result<()> {
    fs::rename(copy, database).map_err(io_error(format!("cannot move the restored copy to {}", database.display())))?;
    if let Err(e) = fsync_dir(dir) {
        notes.push(format!("restored, but {e}: run `sync` before relying on it across a power loss"));
    }
    Ok(())
}

/// The old database, locked against every other connection while it is folded, kept and
/// replaced.
fn replace_existing(
    copy: &Path,
    database: &Path,
    dir: &Path,
    options: &RestoreOptions,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    let (wal, shm) = (beside(database, "-wal"), beside(database, "-shm"));
    let lock = match lock_and_fold(database) {
        Ok(conn) => Some(conn),
        Err(Fold::InUse) => return Err(in_use(database)),
        Err(Fold::Failed(e)) => return Err(e),
        // What a restore is for: replace it, keeping it (with its log) exactly as it was.
        Err(Fold::Damaged(e)) => {
            notes.push(format!("the replaced database could not be read ({e}); it was replaced as it was"));
            None
        }
    };
    let kept = if options.keep_previous { Some(keep_previous(database, dir)?) } else { None };
    let mut moved_wal = None;
    match (&lock, &kept) {
        // Folded: what is left beside it is stale.
        (Some(_), _) => {
            remove_if_exists(&wal)?;
        }
        (None, Some(kept)) => {
            let kept_wal = beside(kept, "-wal");
            match fs::rename(&wal, &kept_wal) {
                Ok(()) => {
                    notes.push(format!("its write-ahead log was kept as {}", kept_wal.display()));
                    moved_wal = Some(kept_wal);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(format!("cannot move {} aside", wal.display()))(e)),
            }
        }
        (None, None) => {
            remove_if_exists(&wal)?;
        }
    }
    // Safe while the lock is held: no other connection can have it mapped. A new database
    // must never meet the old one's wal-index.
    remove_if_exists(&shm)?;
    if let Err(e) = rename_into_place(copy, database, dir, notes) {
        // Not replaced: the database gets its log back, and the link would only be a second
        // name for it.
        if let Some(kept_wal) = &moved_wal {
            let _ = fs::rename(kept_wal, &wal);
        }
        if let Some(kept) = &kept {
            let _ = fs::remove_file(kept);
        }
        return Err(e);
    }
    if let Some(conn) = lock {
        // The old database's connection: closing it removes only its own `-journal`; the new
        // database is in WAL mode and never has one.
        if let Err((_, e)) = conn.close() {
            notes.push(format!("closing the replaced database reported: {e}"));
        }
    }
    Ok(kept)
}

enum Fold {
    InUse,
    Damaged(rusqlite::Error),
    Failed(BackupError),
}

/// Takes SQLite's exclusive lock on the database and folds its write-ahead log into it.
///
/// In exclusive locking mode SQLite opens a WAL database without shared memory, which it may
/// do only under an EXCLUSIVE lock on the file; every other connection to a WAL database holds
/// a SHARED lock from its first read until it closes (the gateway's writer and reader pool for
/// the gateway's whole life), so this fails with SQLITE_BUSY exactly while another connection,
/// in any process, has it open. POSIX locks are per process, but SQLite tracks each file's
/// locks per process too, so a connection in this process counts as well.
fn lock_and_fold(database: &Path) -> Result<Connection, Fold> {
    let classify = |what: &str| {
        let what = what.to_string();
        move |e: rusqlite::Error| {
            if is_busy(&e) {
                Fold::InUse
            } else if is_damaged(&e) {
                Fold::Damaged(e)
            } else {
                Fold::Failed(sqlite_error(what)(e))
            }
        }
    };
    let conn =
        Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(classify(&format!("cannot open {}", database.display())))?;
    // Rides out another command's short transaction; a connection that stays open does not end.
    conn.busy_timeout(Duration::from_secs(2)).map_err(classify("cannot set busy_timeout"))?;
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE")
        .map_err(classify("cannot take the exclusive locking mode"))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(classify(&format!("cannot read {}", database.display())))?;
    // Checkpoints every committed transaction of the -wal into the file and removes the -wal:
    // the kept copy is whole, and no log of the old database is left to meet the new one.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(classify(&format!("cannot fold the write-ahead log of {}", database.display())))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Fold::Failed(BackupError::Refused(format!(
            "the write-ahead log of {} could not be folded (journal mode {mode})",
            database.display()
        ))));
    }
    // In rollback mode too (a database not opened since it was restored), the lock is
    // EXCLUSIVE from here until the connection closes.
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT").map_err(classify(&format!("cannot lock {}", database.display())))?;
    Ok(conn)
}

/// `<file>.before-restore-<UTC time>`, a hard link to the old database (a copy where the file
/// system has no links), fsynced with its directory.
fn keep_previous(database: &Path, dir: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 0..100 {
        let suffix = if n == 0 { format!(".before-restore-{stamp}") } else { format!(".before-restore-{stamp}-{n}") };
        let kept = beside(database, &suffix);
        match fs::hard_link(database, &kept) {
            Ok(()) => {
                fsync_dir(dir)?;
                return Ok(kept);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                if exists(&kept)? {
                    continue;
                }
                let mut from = File::open(database).map_err(io_error(format!("cannot read {}", database.display())))?;
                let mut to = create_private(&kept)?;
                io::copy(&mut from, &mut to).map_err(io_error(format!("cannot copy into {}", kept.display())))?;
                to.sync_all().map_err(io_error(format!("cannot fsync {}", kept.display())))?;
                fsync_dir(dir)?;
                return Ok(kept);
            }
        }
    }
    Err(BackupError::Refused(format!("too many earlier restores of {} this second", database.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated database with every connection closed (a dropped store closes its own later).
    async fn database(dir: &Path, name: &str) -> PathBuf {
        use sqlx::{ConnectOptions, Connection as _};
        let path = dir.join(name);
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        MIGRATOR.run(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        path
    }

    fn open_wal(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).unwrap();
        conn.query_row("SELECT count(*) FROM orders", [], |r| r.get::<_, i64>(0)).unwrap();
        conn
    }

    #[tokio::test]
    async fn a_backup_restores_and_an_open_database_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let live = database(dir.path(), "live.db").await;
        let writer = open_wal(&live);
        let dest = dir.path().join("backup.db");
        let report = backup_sqlite(&live, &dest, false).unwrap();
        assert_eq!(report.contents.orders, 0);
        assert!(!beside(&dest, "-wal").exists() && !beside(&dest, "-shm").exists());
        assert!(matches!(backup_sqlite(&live, &dest, false), Err(BackupError::Exists(_))));
        backup_sqlite(&live, &dest, true).unwrap();

        let checked = check_backup(&dest).unwrap();
        assert!(!beside(&dest, "-wal").exists() && !beside(&dest, "-shm").exists(), "checking changes nothing");
        let keep = RestoreOptions { keep_previous: true };
        // The writer of this very process holds the database open.
        assert!(matches!(restore_sqlite(&checked, &live, &keep), Err(BackupError::InUse(_))));
        drop(writer);
        let restored = restore_sqlite(&checked, &live, &keep).unwrap();
        let kept = restored.kept.unwrap();
        check_backup(&kept).unwrap();
        assert!(!beside(&live, "-wal").exists() && !beside(&live, "-shm").exists());
        let names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "no scratch file left: {names:?}");
        drop(open_wal(&live));
    }

    #[tokio::test]
    async fn strangers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        fs::write(&text, "not a database at all").unwrap();
        assert!(matches!(check_backup(&text), Err(BackupError::NotKuperBridge { .. })));
        let other = dir.path().join("other.db");
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let refused = check_backup(&other).unwrap_err().to_string();
        assert!(refused.contains("_sqlx_migrations"), "{refused}");
        assert!(matches!(check_backup(&dir.path().join("missing.db")), Err(BackupError::NoDatabase(_))));
    }

    #[test]
    fn uris_escape_what_sqlite_would_read_as_a_query() {
        let uri = file_uri(Path::new("/tmp/a b?c#d%e.db"), "mode=ro").unwrap();
        assert_eq!(uri, "file:/tmp/a%20b%3Fc%23d%25e.db?mode=ro");
    }
}
