//! Writes a given number of orders' worth of log records into a service's data directory
//! through its own state machine and log (or recovers one and times it), for
//! `bench/logs.sh`.
//!
//! Usage: `log_soak write|recover broker|bank|notifications|store DIR ORDERS CHECKPOINT_BYTES`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use shop::services::{bank, broker, notifications, store};
use shop::wal::{CheckpointConfig, WalMetrics};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, service, dir, orders, bytes] = args.as_slice() else {
        anyhow::bail!("usage: log_soak write|recover SERVICE DIR ORDERS CHECKPOINT_BYTES");
    };
    let dir = PathBuf::from(dir);
    let orders: u64 = orders.parse().context("ORDERS must be a number")?;
    let checkpoint = CheckpointConfig {
        min_bytes: bytes.parse().context("CHECKPOINT_BYTES must be a number")?,
        unsafe_cut_early: false,
    };
    let start = Instant::now();
    match mode.as_str() {
        "write" => {
            let mut registry = prometheus_client::registry::Registry::default();
            let c = 2048;
            if service == "store" {
                // The store registers its metrics (`wal_*` among them) itself.
                store::soak(&dir, checkpoint, orders, c, &mut registry).await?;
            } else {
                let m = WalMetrics::register(&mut registry);
                match service.as_str() {
                    "broker" => broker::soak(&dir, checkpoint, orders, c, m).await?,
                    "bank" => bank::soak(&dir, checkpoint, orders, c, m).await?,
                    "notifications" => notifications::soak(&dir, checkpoint, orders, c, m).await?,
                    s => anyhow::bail!("unknown service {s}"),
                }
            }
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry)?;
            println!("write_seconds {:.3}", start.elapsed().as_secs_f64());
            for line in text
                .lines()
                .filter(|l| l.starts_with("wal_checkpoint") || l.starts_with("wal_snapshot_bytes"))
            {
                println!("{line}");
            }
        }
        "recover" => {
            let held = match service.as_str() {
                "broker" => broker::soak_recover(&dir, checkpoint)?,
                "bank" => bank::soak_recover(&dir, checkpoint)?,
                "notifications" => notifications::soak_recover(&dir, checkpoint)?,
                "store" => store::soak_recover(&dir, checkpoint)?,
                s => anyhow::bail!("unknown service {s}"),
            };
            println!("recover_seconds {:.3}", start.elapsed().as_secs_f64());
            println!("held {held}");
        }
        m => anyhow::bail!("unknown mode {m}; use write or recover"),
    }
    Ok(())
}
