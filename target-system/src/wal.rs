//! A write-ahead log with group commit, shared by every shop service that must not lose
//! what it acknowledged (store, broker, bank, notifications).
//!
//! Records are framed as `[length u32 LE][crc32 u32 LE][JSON payload]`. On open, records
//! are read back until the first torn or corrupt frame (a crash mid-write), and the file
//! is cut there. [`spawn_committer`] runs the state machine of a service on one task:
//! it takes every operation waiting, applies them in order, writes their records, calls
//! `fdatasync` once for the whole group, and only then answers them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const HEADER: usize = 8;
/// A frame claiming to be larger than this is treated as corruption.
const MAX_RECORD: u32 = 64 << 20;
/// The first bytes of a snapshot file, then `[generation u64][length u64][crc32 u32]`.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOPSNP1";
const SNAPSHOT_HEADER: usize = 8 + 8 + 8 + 4;

/// When to checkpoint, from the command line of a service (`SHOP_WAL_*`).
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// Checkpoint once the live log segment holds this many bytes, or as many as the
    /// last snapshot if that is more (so the work stays proportional to what is
    /// written); 0 never checkpoints and keeps the whole log.
    #[arg(long, env = "SHOP_WAL_CHECKPOINT_BYTES", default_value_t = 16 << 20)]
    pub wal_checkpoint_bytes: u64,
    /// UNSAFE: cut the log as soon as a checkpoint starts and write the snapshot in
    /// place, before it is durable; at recovery, start from whatever is left. A crash
    /// during a checkpoint then loses acknowledged data: this exists so tests can show
    /// that the crash checks catch it.
    #[arg(long, env = "SHOP_UNSAFE_CUT_BEFORE_SNAPSHOT", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_cut_before_snapshot: bool,
}

impl CheckpointArgs {
    pub fn config(&self) -> CheckpointConfig {
        CheckpointConfig {
            min_bytes: self.wal_checkpoint_bytes,
            unsafe_cut_early: self.unsafe_cut_before_snapshot,
        }
    }
}

/// When and how a [`Wal`] checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointConfig {
    /// Bytes of the live segment that trigger a checkpoint; 0 turns checkpoints off.
    pub min_bytes: u64,
    /// See [`CheckpointArgs::unsafe_cut_before_snapshot`].
    pub unsafe_cut_early: bool,
}

/// A copy of a machine's state, serialised later off the committer's task.
pub struct Snapshot(Box<WriteSnapshot>);

/// Serialises a snapshot's state into the writer it is given.
type WriteSnapshot = dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send;

impl Snapshot {
    /// `value` should be cheap to build (clones of `Arc`s, small maps): the committer
    /// waits for [`Machine::snapshot`], not for the serialisation.
    pub fn of<T: Serialize + Send + 'static>(value: T) -> Self {
        Snapshot(Box::new(move |w: &mut dyn Write| {
            serde_json::to_writer(w, &value).map_err(io::Error::other)
        }))
    }
}

/// What [`Wal::recover`] found: the newest intact snapshot and the records after it.
pub struct Recovered<S, R> {
    pub wal: Wal,
    pub snapshot: Option<S>,
    pub records: Vec<R>,
}

pub struct Wal {
    file: File,
    /// The file named by the service: segment 0, and the stem of every other file.
    base: PathBuf,
    /// Generation of the live segment.
    generation: u64,
    buf: Vec<u8>,
    /// Bytes in the live segment, including what is buffered.
    len: u64,
    checkpoint: CheckpointConfig,
    /// Size of the newest snapshot, which scales the checkpoint threshold.
    snapshot_len: u64,
    /// No checkpoint is tried before the live segment reaches this (after a failure).
    retry_at: u64,
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    base.with_file_name(name)
}

fn segment_path(base: &Path, generation: u64) -> PathBuf {
    if generation == 0 {
        base.to_path_buf()
    } else {
        with_suffix(base, &format!(".{generation}"))
    }
}

fn snapshot_path(base: &Path, generation: u64) -> PathBuf {
    with_suffix(base, &format!(".snapshot.{generation}"))
}

fn sync_dir(base: &Path) -> io::Result<()> {
    match base.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// The generations of the segments and snapshots beside `base`, and the temporary files.
#[derive(Default, Debug)]
struct Files {
    segments: std::collections::BTreeSet<u64>,
    snapshots: std::collections::BTreeSet<u64>,
    temporary: Vec<PathBuf>,
}

fn list_files(base: &Path) -> io::Result<Files> {
    let mut files = Files::default();
    let dir = base
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = base.file_name().unwrap_or_default().to_string_lossy();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name == stem {
            files.segments.insert(0);
            continue;
        }
        let Some(rest) = name.strip_prefix(&*stem).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        if rest.ends_with(".tmp") {
            files.temporary.push(dir.join(&*name));
        } else if let Some(g) = rest.strip_prefix("snapshot.") {
            if let Ok(g) = g.parse() {
                files.snapshots.insert(g);
            }
        } else if let Ok(g) = rest.parse() {
            files.segments.insert(g);
        }
    }
    Ok(files)
}

/// Reads the frames of one segment; cuts a torn or corrupt tail off the file.
fn read_segment<T: DeserializeOwned>(file: &mut File, path: &Path) -> io::Result<(Vec<T>, u64)> {
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap());
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        if len > MAX_RECORD || data.len() - pos - HEADER < len as usize {
            break;
        }
        let payload = &data[pos + HEADER..pos + HEADER + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice(payload) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        pos += HEADER + len as usize;
    }
    if pos < data.len() {
        tracing::warn!(path = %path.display(), kept = pos, dropped = data.len() - pos, "cutting a torn tail off the log");
        file.set_len(pos as u64)?;
        file.sync_all()?;
    }
    Ok((records, pos as u64))
}

/// Reads snapshot `generation`; any damage is an error (the caller falls back).
fn read_snapshot<S: DeserializeOwned>(base: &Path, generation: u64) -> io::Result<(S, u64)> {
    let path = snapshot_path(base, generation);
    let data = std::fs::read(&path)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if data.len() < SNAPSHOT_HEADER || &data[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a snapshot (bad header)"));
    }
    let g = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let len = u64::from_le_bytes(data[16..24].try_into().unwrap());
    let crc = u32::from_le_bytes(data[24..28].try_into().unwrap());
    let payload = &data[SNAPSHOT_HEADER..];
    if g != generation || payload.len() as u64 != len {
        return Err(bad("torn snapshot (length or generation differs)"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(bad("corrupt snapshot (checksum differs)"));
    }
    let s = serde_json::from_slice(payload).map_err(io::Error::other)?;
    Ok((s, data.len() as u64))
}

/// A writer that counts and checksums what passes through it.
struct Summing<W> {
    inner: W,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes snapshot `generation` to `path` (header, then the payload streamed through a
/// checksum), and makes the file's content durable unless `unsafe_no_sync`.
fn write_snapshot_file(
    path: &Path,
    generation: u64,
    snapshot: Snapshot,
    unsafe_no_sync: bool,
) -> io::Result<u64> {
    let mut file = File::create(path)?;
    file.write_all(&[0u8; SNAPSHOT_HEADER])?;
    let mut w = Summing {
        inner: BufWriter::with_capacity(1 << 20, &mut file),
        len: 0,
        crc: crc32fast::Hasher::new(),
    };
    (snapshot.0)(&mut w)?;
    w.flush()?;
    let (len, crc) = (w.len, w.crc.clone().finalize());
    drop(w);
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&generation.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    if !unsafe_no_sync {
        file.sync_all()?;
    }
    Ok(len + SNAPSHOT_HEADER as u64)
}

/// Deletes the segments and snapshots older than `generation`.
fn delete_older(base: &Path, generation: u64) -> io::Result<()> {
    let files = list_files(base)?;
    let segments = files
        .segments
        .range(..generation)
        .map(|g| segment_path(base, *g));
    let snapshots = files
        .snapshots
        .range(..generation)
        .map(|g| snapshot_path(base, *g));
    for path in segments.chain(snapshots) {
        match std::fs::remove_file(&path) {
            // A newer checkpoint (`Wal::replace`) may have deleted it meanwhile.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The durable part of a checkpoint to `generation`, run on a blocking thread: the
/// snapshot is durable under its final name before anything older is deleted.
fn complete_checkpoint(
    base: &Path,
    generation: u64,
    snapshot: Snapshot,
    config: CheckpointConfig,
) -> io::Result<u64> {
    let path = snapshot_path(base, generation);
    if config.unsafe_cut_early {
        delete_older(base, generation)?;
        return write_snapshot_file(&path, generation, snapshot, true);
    }
    let tmp = with_suffix(&path, ".tmp");
    let len = match write_snapshot_file(&tmp, generation, snapshot, false) {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path)?;
    sync_dir(base)?;
    delete_older(base, generation)?;
    Ok(len)
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with every intact record.
    /// For a machine that never snapshots: a log with a snapshot is refused, since its
    /// records alone are not the state.
    pub fn open<T: DeserializeOwned>(path: &Path) -> io::Result<(Wal, Vec<T>)> {
        let r = Self::recover::<serde::de::IgnoredAny, T>(path, CheckpointConfig::default())?;
        if r.snapshot.is_some() {
            return Err(io::Error::other(format!(
                "{} has a snapshot; open it with Wal::recover",
                path.display()
            )));
        }
        Ok((r.wal, r.records))
    }

    /// Opens (or creates) the log named `base`: the newest intact snapshot, the records
    /// of every segment after it, and the live segment open for appending.
    pub fn recover<S: DeserializeOwned, R: DeserializeOwned>(
        base: &Path,
        checkpoint: CheckpointConfig,
    ) -> io::Result<Recovered<S, R>> {
        if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let files = list_files(base)?;
        for t in &files.temporary {
            // A checkpoint that did not finish; what it covers is still in the log.
            std::fs::remove_file(t)?;
        }
        let (from, snapshot, snapshot_len) = newest_snapshot::<S>(base, &files);
        check_continuity(base, &files, from, checkpoint.unsafe_cut_early)?;
        let last = files.segments.last().copied().unwrap_or(from).max(from);
        let mut records = Vec::new();
        let mut live = None;
        for g in files.segments.range(from..) {
            let path = segment_path(base, *g);
            let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
            let (mut got, len) = read_segment(&mut file, &path)?;
            records.append(&mut got);
            if *g == last {
                live = Some((file, len));
            }
        }
        let (mut file, len) = match live {
            Some(l) => l,
            None => {
                let path = segment_path(base, last);
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(&path)?;
                // Make the new file's directory entry durable too.
                sync_dir(base)?;
                (file, 0)
            }
        };
        file.seek(SeekFrom::End(0))?;
        // What the chosen snapshot covers goes, and so do damaged snapshots (every
        // snapshot but the chosen one was damaged or older).
        for g in files.snapshots.iter().filter(|g| **g != from) {
            std::fs::remove_file(snapshot_path(base, *g))?;
        }
        delete_older(base, from)?;
        let wal = Wal {
            file,
            base: base.to_path_buf(),
            generation: last,
            buf: Vec::new(),
            len,
            checkpoint,
            snapshot_len,
            retry_at: 0,
        };
        Ok(Recovered {
            wal,
            snapshot,
            records,
        })
    }

    pub fn path(&self) -> PathBuf {
        segment_path(&self.base, self.generation)
    }

    /// Generation of the live segment.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the live segment.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buffers one record; nothing reaches the file before [`Wal::write`].
    pub fn append<T: Serialize>(&mut self, record: &T) -> u64 {
        let payload = serde_json::to_vec(record).expect("log records serialise");
        let offset = self.len;
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        self.buf.extend_from_slice(&payload);
        self.len += (HEADER + payload.len()) as u64;
        offset
    }

    /// Hands the buffered records to the kernel (they survive the process, not the
    /// machine).
    pub fn write(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes and makes durable everything appended so far.
    pub fn sync(&mut self) -> io::Result<()> {
        self.write()?;
        self.file.sync_data()
    }

    /// Whether the live segment has grown enough for a checkpoint.
    fn wants_checkpoint(&self) -> bool {
        let min = self.checkpoint.min_bytes;
        min > 0 && self.len >= min.max(self.snapshot_len).max(self.retry_at)
    }

    /// Makes the live segment durable and starts the next one; returns the generation
    /// of the snapshot that must cover everything before it.
    fn start_segment(&mut self) -> io::Result<u64> {
        self.sync()?;
        let next = self.generation + 1;
        let path = segment_path(&self.base, next);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        sync_dir(&self.base)?;
        self.file = file;
        self.generation = next;
        self.len = 0;
        Ok(next)
    }

    /// Replaces everything logged so far by `snapshot`, durably, before it returns (a
    /// member installing its leader's state). A crash before then leaves the old log.
    pub fn replace(&mut self, snapshot: Snapshot) -> io::Result<()> {
        let generation = self.start_segment()?;
        let config = CheckpointConfig {
            unsafe_cut_early: false,
            ..self.checkpoint
        };
        self.snapshot_len = complete_checkpoint(&self.base, generation, snapshot, config)?;
        Ok(())
    }
}

/// The newest snapshot that reads back intact: its generation, its state and its size
/// (generation 0 and no state when there is none).
fn newest_snapshot<S: DeserializeOwned>(base: &Path, files: &Files) -> (u64, Option<S>, u64) {
    for g in files.snapshots.iter().rev() {
        match read_snapshot::<S>(base, *g) {
            Ok((s, len)) => return (*g, Some(s), len),
            Err(e) => tracing::warn!(
                path = %snapshot_path(base, *g).display(),
                error = %e,
                "skipping a damaged snapshot; falling back to an older one"
            ),
        }
    }
    (0, None, 0)
}

/// Refuses a log with a hole between the snapshot chosen and the live segment: records
/// there are gone, and starting would silently forget acknowledged operations.
fn check_continuity(base: &Path, files: &Files, from: u64, unsafe_ok: bool) -> io::Result<()> {
    let Some(&last) = files.segments.last() else {
        return Ok(());
    };
    let missing: Vec<u64> = (from..=last)
        .filter(|g| !files.segments.contains(g))
        .collect();
    if missing.is_empty() || last < from {
        return Ok(());
    }
    let message = format!(
        "{}: log segments {missing:?} are missing after snapshot generation {from}; \
         refusing to start without acknowledged records",
        base.display()
    );
    if unsafe_ok {
        tracing::warn!("UNSAFE: {message}");
        return Ok(());
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// Reads the record that starts at byte `offset` of the log at `path`.
pub fn read_at<T: DeserializeOwned>(file: &File, offset: u64) -> io::Result<T> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap());
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER as u64)?;
    serde_json::from_slice(&payload).map_err(io::Error::other)
}

/// How acknowledgements relate to durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer only after the group's `fdatasync` (the default).
    Fsync,
    /// UNSAFE: answer as soon as the operation is applied in memory, and write the log
    /// in the background every 200 ms. A crash loses acknowledged operations: this
    /// exists so tests can show that the durability checks catch it.
    UnsafeAckBeforeWrite,
}

/// A service's state, driven by the committer.
pub trait Machine: Send + 'static {
    type Op: Send + 'static;
    type Reply: Send + 'static;
    type Record: Serialize + Send;

    /// Applies `op`, pushing the log records that make it durable.
    fn apply(&mut self, op: Self::Op, records: &mut Vec<Self::Record>) -> Self::Reply;

    /// Called once the records of every operation applied so far are durable (or, in
    /// the unsafe mode, right after each operation).
    fn committed(&mut self) {}

    /// A copy of the state after every operation applied so far, for a checkpoint; it
    /// must restore, with the records that follow, exactly the state the log would
    /// (counters that hand out sequence numbers included). `None`: this machine never
    /// checkpoints, and its log keeps every record.
    fn snapshot(&self) -> Option<Snapshot> {
        None
    }
}

/// Metrics of one committer (`shop_<prefix>_wal_*`).
#[derive(Clone)]
pub struct WalMetrics {
    pub fsync: Histogram,
    pub group_size: Histogram,
    pub bytes: Counter,
    pub checkpoints: Counter,
    pub checkpoint_failures: Counter,
    /// Time the committer stops for a checkpoint (the copy and the new segment).
    pub checkpoint_stall: Histogram,
    /// Time of the background part (serialise, fsync, rename, delete).
    pub checkpoint_duration: Histogram,
    pub snapshot_bytes: Gauge,
}

impl WalMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            fsync: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            group_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            bytes: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_failures: Counter::default(),
            checkpoint_stall: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            checkpoint_duration: Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            snapshot_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("wal");
        r.register(
            "fsync_duration_seconds",
            "Time of one fdatasync of the log",
            m.fsync.clone(),
        );
        r.register(
            "group_commit_size",
            "Operations made durable by one fdatasync",
            m.group_size.clone(),
        );
        r.register(
            "written_bytes",
            "Bytes appended to the log",
            m.bytes.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints completed (snapshot durable, older log deleted)",
            m.checkpoints.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoints that failed (the log is kept whole)",
            m.checkpoint_failures.clone(),
        );
        r.register(
            "checkpoint_stall_seconds",
            "Time the committer stopped to start a checkpoint",
            m.checkpoint_stall.clone(),
        );
        r.register(
            "checkpoint_duration_seconds",
            "Time to write a snapshot durably and cut the log, off the request path",
            m.checkpoint_duration.clone(),
        );
        r.register(
            "snapshot_bytes",
            "Size of the newest snapshot",
            m.snapshot_bytes.clone(),
        );
        m
    }
}

/// The sending side of a committer.
pub struct Committer<M: Machine> {
    tx: mpsc::Sender<(M::Op, oneshot::Sender<M::Reply>)>,
}

impl<M: Machine> Clone for Committer<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the log writer has stopped")]
pub struct Stopped;

impl<M: Machine> Committer<M> {
    /// Applies `op` and returns its reply once it is durable.
    pub async fn call(&self, op: M::Op) -> Result<M::Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((op, tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Most operations made durable by one `fdatasync`.
const MAX_GROUP: usize = 512;

/// Runs `machine` on its own task. The task ends when every [`Committer`] is dropped;
/// the returned handle resolves then. A failing disk stops the process: answering
/// without durability would be a lie.
pub fn spawn_committer<M: Machine>(
    mut machine: M,
    mut wal: Wal,
    durability: Durability,
    metrics: WalMetrics,
) -> (Committer<M>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(M::Op, oneshot::Sender<M::Reply>)>(4096);
    let handle = tokio::spawn(async move {
        let mut records: Vec<M::Record> = Vec::new();
        let mut replies: Vec<(oneshot::Sender<M::Reply>, M::Reply)> = Vec::new();
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        let mut checkpoints = Checkpoints::new(metrics.clone());
        loop {
            let first = match durability {
                Durability::Fsync => rx.recv().await,
                Durability::UnsafeAckBeforeWrite => tokio::select! {
                    op = rx.recv() => op,
                    _ = flush.tick() => {
                        if let Err(e) = wal.write() {
                            fatal(&wal, e);
                        }
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            let size = group.len();
            for (op, reply) in group {
                let r = machine.apply(op, &mut records);
                if durability == Durability::UnsafeAckBeforeWrite {
                    machine.committed();
                    let _ = reply.send(r);
                } else {
                    replies.push((reply, r));
                }
            }
            let before = wal.len();
            for r in records.drain(..) {
                wal.append(&r);
            }
            metrics.bytes.inc_by(wal.len() - before);
            if durability == Durability::Fsync {
                let start = Instant::now();
                if let Err(e) = wal.sync() {
                    fatal(&wal, e);
                }
                metrics.fsync.observe(start.elapsed().as_secs_f64());
                metrics.group_size.observe(size as f64);
                machine.committed();
                for (reply, r) in replies.drain(..) {
                    let _ = reply.send(r);
                }
            }
            checkpoints.step(&mut wal, || machine.snapshot());
        }
        let _ = wal.sync();
        checkpoints.wait(&mut wal).await;
    });
    (Committer { tx }, handle)
}

/// Runs `order(client, i)` for every `i` below `orders`, `concurrency` at a time, and
/// waits for them; the first error ends it. `client` (a committer's sending side) is
/// dropped once every worker has its own copy, so that its writer ends after them.
/// Drives the services' `soak`s for `bench/logs.sh`.
#[doc(hidden)]
pub async fn soak<C, F, Fut>(
    client: C,
    orders: u64,
    concurrency: u64,
    order: F,
) -> anyhow::Result<()>
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, order) = (client.clone(), order.clone());
        workers.spawn(async move {
            for i in (w..orders).step_by(concurrency as usize) {
                order(client.clone(), i).await?;
            }
            anyhow::Ok(())
        });
    }
    drop(client);
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(())
}

/// A checkpoint's background part: its snapshot's size once durable and the log cut.
type CheckpointTask = tokio::task::JoinHandle<io::Result<(u64, Duration)>>;

/// The checkpoints of one log: started when its live segment has grown enough,
/// written off the writer's task, collected when done. [`spawn_committer`] drives one;
/// a service that writes its log itself (the store) drives its own.
pub struct Checkpoints {
    running: Option<CheckpointTask>,
    metrics: WalMetrics,
}

impl Checkpoints {
    pub fn new(metrics: WalMetrics) -> Self {
        Self {
            running: None,
            metrics,
        }
    }

    /// Collects a finished checkpoint, and starts one when the live segment has grown
    /// enough and none is running. `snapshot` is called only then, for the state that
    /// every record appended so far makes (`None`: no checkpoint). Call it between
    /// writes, on a Tokio runtime; a failing disk stops the process.
    pub fn step(&mut self, wal: &mut Wal, snapshot: impl FnOnce() -> Option<Snapshot>) {
        if let Some(task) = self.running.take() {
            if !task.is_finished() {
                self.running = Some(task);
                return;
            }
            let result = futures::FutureExt::now_or_never(task).expect("finished");
            self.finish(wal, result);
        }
        if !wal.wants_checkpoint() {
            return;
        }
        let start = Instant::now();
        let Some(snapshot) = snapshot() else { return };
        let generation = match wal.start_segment() {
            Ok(g) => g,
            Err(e) => fatal(wal, e),
        };
        self.metrics
            .checkpoint_stall
            .observe(start.elapsed().as_secs_f64());
        let (base, config) = (wal.base.clone(), wal.checkpoint);
        self.running = Some(tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let len = complete_checkpoint(&base, generation, snapshot, config)?;
            Ok((len, start.elapsed()))
        }));
    }

    /// Whether a checkpoint is under way.
    pub fn busy(&self) -> bool {
        self.running.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits for the checkpoint under way, if any (before the process ends).
    pub async fn wait(&mut self, wal: &mut Wal) {
        if let Some(task) = self.running.take() {
            let result = task.await;
            self.finish(wal, result);
        }
    }

    fn finish(
        &self,
        wal: &mut Wal,
        result: Result<io::Result<(u64, Duration)>, tokio::task::JoinError>,
    ) {
        let metrics = &self.metrics;
        let error = match result {
            Ok(Ok((len, took))) => {
                wal.snapshot_len = len;
                wal.retry_at = 0;
                metrics.checkpoints.inc();
                metrics.checkpoint_duration.observe(took.as_secs_f64());
                metrics.snapshot_bytes.set(len as i64);
                tracing::debug!(
                    generation = wal.generation,
                    bytes = len,
                    "checkpoint durable; older log deleted"
                );
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // The older segments are still there: nothing is lost, the log only stays
        // longer. Try again after another threshold's worth of records.
        metrics.checkpoint_failures.inc();
        wal.retry_at = wal.len + wal.checkpoint.min_bytes;
        tracing::warn!(path = %wal.base.display(), error, "checkpoint failed; keeping the whole log");
    }
}

fn fatal(wal: &Wal, e: io::Error) -> ! {
    tracing::error!(path = %wal.path().display(), error = %e, "cannot write the log; stopping");
    std::process::exit(70);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct R {
        n: u32,
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, old) = Wal::open::<R>(&path).unwrap();
        assert!(old.is_empty());
        for n in 0..3 {
            wal.append(&R { n });
        }
        wal.sync().unwrap();
        let good_len = wal.len();
        drop(wal);
        // A crash in the middle of the next write leaves half a frame behind.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let (mut wal, records) = Wal::open::<R>(&path).unwrap();
        assert_eq!(records, vec![R { n: 0 }, R { n: 1 }, R { n: 2 }]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        wal.append(&R { n: 3 });
        wal.sync().unwrap();
        let (_, records) = Wal::open::<R>(&path).unwrap();
        assert_eq!(records.len(), 4);
    }

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open::<R>(&path).unwrap();
        wal.append(&R { n: 1 });
        let second = wal.append(&R { n: 2 });
        wal.sync().unwrap();
        drop(wal);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let (_, records) = Wal::open::<R>(&path).unwrap();
        assert_eq!(records, vec![R { n: 1 }]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), second);
    }

    struct Counter2(u64);
    impl Machine for Counter2 {
        type Op = u64;
        type Reply = u64;
        type Record = R;
        fn apply(&mut self, op: u64, records: &mut Vec<R>) -> u64 {
            self.0 += op;
            records.push(R { n: op as u32 });
            self.0
        }
    }

    #[tokio::test]
    async fn the_committer_answers_after_the_records_are_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (wal, _) = Wal::open::<R>(&path).unwrap();
        let mut registry = Registry::default();
        let metrics = WalMetrics::register(&mut registry);
        let (c, handle) = spawn_committer(Counter2(0), wal, Durability::Fsync, metrics);
        let calls = (1..=50).map(|i| {
            let c = c.clone();
            async move { c.call(i).await.unwrap() }
        });
        let results = futures::future::join_all(calls).await;
        assert_eq!(*results.iter().max().unwrap(), (1..=50).sum::<u64>());
        // Every answered operation is in the file already.
        let (_, records) = Wal::open::<R>(&path).unwrap();
        assert_eq!(records.len(), 50);
        drop(c);
        handle.await.unwrap();
    }

    /// Numbers appended one per record; the snapshot is the list so far.
    fn state(base: &Path, config: CheckpointConfig) -> io::Result<Vec<u64>> {
        let r = Wal::recover::<Vec<u64>, u64>(base, config)?;
        let mut all = r.snapshot.unwrap_or_default();
        all.extend(r.records);
        Ok(all)
    }

    const SAFE: CheckpointConfig = CheckpointConfig {
        min_bytes: 1,
        unsafe_cut_early: false,
    };

    /// A log with one finished checkpoint (snapshot 1 holds 1..=10, segment 1 holds
    /// 11..=20) and a second one begun: segment 2 started and holding 21..=25.
    fn half_checkpointed(base: &Path) -> Wal {
        let mut wal = Wal::recover::<Vec<u64>, u64>(base, SAFE).unwrap().wal;
        let append = |wal: &mut Wal, r: std::ops::RangeInclusive<u64>| {
            for n in r {
                wal.append(&n);
            }
            wal.sync().unwrap();
        };
        append(&mut wal, 1..=10);
        let g = wal.start_segment().unwrap();
        complete_checkpoint(base, g, Snapshot::of((1..=10).collect::<Vec<u64>>()), SAFE).unwrap();
        append(&mut wal, 11..=20);
        assert_eq!(wal.start_segment().unwrap(), 2);
        append(&mut wal, 21..=25);
        wal
    }

    fn snapshot2() -> Snapshot {
        Snapshot::of((1..=20).collect::<Vec<u64>>())
    }

    #[test]
    fn a_crash_at_any_step_of_a_checkpoint_loses_nothing() {
        let all: Vec<u64> = (1..=25).collect();
        type Step = fn(&Path);
        let steps: [(&str, Step); 7] = [
            ("segment started, no snapshot yet", |_| {}),
            ("temporary snapshot torn", |b| {
                let tmp = with_suffix(&snapshot_path(b, 2), ".tmp");
                write_snapshot_file(&tmp, 2, snapshot2(), false).unwrap();
                let f = OpenOptions::new().write(true).open(&tmp).unwrap();
                f.set_len(SNAPSHOT_HEADER as u64 + 5).unwrap();
            }),
            ("temporary snapshot whole, not renamed", |b| {
                let tmp = with_suffix(&snapshot_path(b, 2), ".tmp");
                write_snapshot_file(&tmp, 2, snapshot2(), false).unwrap();
            }),
            ("renamed, nothing deleted", |b| {
                write_snapshot_file(&snapshot_path(b, 2), 2, snapshot2(), false).unwrap();
            }),
            ("renamed, older segment deleted", |b| {
                write_snapshot_file(&snapshot_path(b, 2), 2, snapshot2(), false).unwrap();
                std::fs::remove_file(segment_path(b, 1)).unwrap();
            }),
            ("complete", |b| {
                complete_checkpoint(b, 2, snapshot2(), SAFE).unwrap();
            }),
            ("new snapshot corrupt on disk", |b| {
                let path = snapshot_path(b, 2);
                write_snapshot_file(&path, 2, snapshot2(), false).unwrap();
                let mut data = std::fs::read(&path).unwrap();
                let last = data.len() - 2;
                data[last] ^= 0x55;
                std::fs::write(&path, data).unwrap();
            }),
        ];
        for (name, step) in steps {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("log");
            drop(half_checkpointed(&base));
            step(&base);
            assert_eq!(state(&base, SAFE).unwrap(), all, "crash point: {name}");
            // Recovery tidied up: once more, the same state.
            assert_eq!(state(&base, SAFE).unwrap(), all, "second recovery: {name}");
            let files = list_files(&base).unwrap();
            assert!(files.temporary.is_empty(), "{name}: {files:?}");
        }
    }

    #[test]
    fn cutting_the_log_before_the_snapshot_is_durable_loses_records() {
        // The unsafe order: older files deleted first, then a crash before the snapshot.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log");
        drop(half_checkpointed(&base));
        delete_older(&base, 2).unwrap();
        let err = state(&base, SAFE).unwrap_err();
        assert!(err.to_string().contains("are missing"), "{err}");
        let unsafe_config = CheckpointConfig {
            unsafe_cut_early: true,
            ..SAFE
        };
        assert_eq!(
            state(&base, unsafe_config).unwrap(),
            (21..=25).collect::<Vec<u64>>(),
            "1..=20 are gone"
        );
    }

    #[test]
    fn a_log_with_a_snapshot_is_refused_by_plain_open() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log");
        drop(half_checkpointed(&base));
        let err = Wal::open::<u64>(&base).err().unwrap();
        assert!(err.to_string().contains("has a snapshot"), "{err}");
    }

    /// Hands out sequence numbers; its snapshot is the next one and every number given.
    struct Sequencer {
        next: u64,
        given: Vec<u64>,
    }

    impl Machine for Sequencer {
        type Op = ();
        type Reply = u64;
        type Record = u64;
        fn apply(&mut self, _: (), records: &mut Vec<u64>) -> u64 {
            let n = self.next;
            self.next += 1;
            self.given.push(n);
            records.push(n);
            n
        }
        fn snapshot(&self) -> Option<Snapshot> {
            Some(Snapshot::of(self.given.clone()))
        }
    }

    async fn run_sequencer(base: &Path, config: CheckpointConfig, calls: usize) -> (Vec<u64>, u64) {
        let r = Wal::recover::<Vec<u64>, u64>(base, config).unwrap();
        let mut given = r.snapshot.unwrap_or_default();
        given.extend(r.records);
        let machine = Sequencer {
            next: given.last().map_or(1, |n| n + 1),
            given,
        };
        let mut registry = Registry::default();
        let metrics = WalMetrics::register(&mut registry);
        let (c, handle) = spawn_committer(machine, r.wal, Durability::Fsync, metrics.clone());
        let mut answers = Vec::new();
        for _ in 0..calls {
            answers.push(c.call(()).await.unwrap());
        }
        drop(c);
        handle.await.unwrap();
        (answers, metrics.checkpoints.get())
    }

    #[tokio::test]
    async fn checkpoints_bound_the_log_and_sequence_numbers_continue() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log");
        let config = CheckpointConfig {
            min_bytes: 2_000,
            unsafe_cut_early: false,
        };
        let (first, checkpoints) = run_sequencer(&base, config, 3_000).await;
        assert_eq!(first, (1..=3_000).collect::<Vec<u64>>());
        assert!(checkpoints >= 3, "{checkpoints} checkpoints");
        let files = list_files(&base).unwrap();
        assert!(files.segments.len() <= 2, "{files:?}");
        assert!(files.snapshots.len() <= 1, "{files:?}");
        assert!(!files.segments.contains(&0), "segment 0 was cut: {files:?}");
        // After a restart the numbers go on from where they were.
        let (second, _) = run_sequencer(&base, config, 500).await;
        assert_eq!(second, (3_001..=3_500).collect::<Vec<u64>>());
        assert_eq!(
            state(&base, config).unwrap(),
            (1..=3_500).collect::<Vec<u64>>()
        );
    }
}
