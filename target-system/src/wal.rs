//! A write-ahead log with group commit, shared by every shop service that must not lose
//! what it acknowledged (store, broker, bank, notifications).
//!
//! Records are framed as `[length u32 LE][crc32 u32 LE][JSON payload]`. On open, records
//! are read back until the first torn or corrupt frame (a crash mid-write), and the file
//! is cut there. [`spawn_committer`] runs the state machine of a service on one task:
//! it takes every operation waiting, applies them in order, writes their records, calls
//! `fdatasync` once for the whole group, and only then answers them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const HEADER: usize = 8;
/// A frame claiming to be larger than this is treated as corruption.
const MAX_RECORD: u32 = 64 << 20;

pub struct Wal {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes in the file, including what is buffered.
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with every intact record.
    pub fn open<T: DeserializeOwned>(path: &Path) -> io::Result<(Wal, Vec<T>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if created {
            // Make the new file's directory entry durable too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
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
        file.seek(SeekFrom::End(0))?;
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                buf: Vec::new(),
                len: pos as u64,
            },
            records,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log.
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
}

/// Metrics of one committer (`shop_<prefix>_wal_*`).
#[derive(Clone)]
pub struct WalMetrics {
    pub fsync: Histogram,
    pub group_size: Histogram,
    pub bytes: Counter,
}

impl WalMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            fsync: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            group_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            bytes: Counter::default(),
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
        }
        let _ = wal.sync();
    });
    (Committer { tx }, handle)
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
}
