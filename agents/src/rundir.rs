//! The run directory of one `faultline up` (or agent): replica logs, the live status
//! file, and later the fault journal. The most recent run on the machine is reachable
//! through `<home>/latest`, which is how later commands find it.

use std::io;
use std::path::{Path, PathBuf};

/// faultline's state directory: `$FAULTLINE_HOME`, else `$XDG_STATE_HOME/faultline`,
/// else `~/.local/state/faultline`.
pub fn faultline_home() -> PathBuf {
    if let Some(h) = std::env::var_os("FAULTLINE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("faultline");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/state/faultline")
}

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Uses `path` as the run directory, creating it. The error names the path.
    pub fn at(path: &Path) -> io::Result<Self> {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create the run directory {}: {e}", path.display()),
            )
        };
        if let Ok(m) = std::fs::symlink_metadata(path)
            && !m.is_dir()
            && !path.is_dir()
        {
            return Err(named(io::Error::other("it exists and is not a directory")));
        }
        std::fs::create_dir_all(path.join("logs")).map_err(named)?;
        Ok(Self {
            path: std::path::absolute(path).map_err(named)?,
        })
    }

    /// Creates a new run directory under `<home>/runs`.
    pub fn create_in_home() -> io::Result<Self> {
        let home = faultline_home();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self::at(
            &home
                .join("runs")
                .join(format!("{secs}-{}", std::process::id())),
        )
    }

    /// Points `<home>/latest` at this run directory, which is how later commands find
    /// the most recent run on the machine.
    pub fn mark_latest(&self) -> io::Result<()> {
        let home = faultline_home();
        let latest = home.join("latest");
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot point {} at this run: {e}", latest.display()),
            )
        };
        std::fs::create_dir_all(&home).map_err(named)?;
        let tmp = home.join(format!(".latest-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.path, &tmp).map_err(named)?;
        std::fs::rename(&tmp, &latest).map_err(named)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn log_path(&self, replica: &str) -> PathBuf {
        self.path.join("logs").join(format!("{replica}.log"))
    }

    /// Writes `name` in the run directory atomically (write then rename), so readers
    /// never see half a file.
    pub fn write_atomic(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, self.path.join(name))
    }
}

/// The last `lines` lines of a file, for error messages about a process that died.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
