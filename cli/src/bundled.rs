//! The bundled reference system, compiled into the binary so that `faultline up` works
//! from any directory.

use std::path::{Path, PathBuf};

use faultline_agent::diag::SourceError;
use faultline_agent::topology::Topology;

pub use crate::shop::{TOPOLOGY, TOPOLOGY_NAME};

/// `path`'s topology, or the bundled one.
pub fn load_topology(path: Option<&Path>) -> Result<Topology, SourceError> {
    match path {
        Some(p) => {
            // Read here rather than by `Topology::load`, which would block on a FIFO.
            let shown = p.display().to_string();
            let text = crate::input::read(p, &shown)
                .map_err(|e| e.into_source(&shown, "cannot read the topology file"))?;
            Topology::parse(&shown, &text, Topology::dir_of(p))
        }
        None => Topology::parse(TOPOLOGY_NAME, TOPOLOGY, PathBuf::new()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_topology_is_valid() {
        let t = super::load_topology(None).unwrap();
        assert_eq!(t.entrypoint.as_deref(), Some("gateway"));
        assert_eq!(
            t.services.last().unwrap().name,
            "gateway",
            "the entrypoint starts last"
        );
    }
}
