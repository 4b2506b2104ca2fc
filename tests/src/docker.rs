//! The Docker engine as the container tests see it: the locally built images, and the
//! engine's own word on a container (`docker inspect`) or on what carries a label.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Mutex;

use crate::bin;

/// Builds `faultline/shop` and `faultline/agent` from this build's binaries, tagged
/// `tag` (and faultline's version and `latest`, which the Docker runtime and its reaper
/// use), once per test binary and tag. A missing daemon fails the test here.
pub fn images(tag: &str) -> String {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(tag) {
        let out = Command::new(bin("faultline"))
            .args(["images", "build", "--tag", tag])
            .output()
            .expect("run faultline images build");
        assert!(
            out.status.success(),
            "faultline images build failed (is the Docker daemon running?):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        built.insert(tag.to_owned());
    }
    tag.to_owned()
}

/// `docker inspect -f FORMAT NAME`, trimmed (empty for a container that is gone).
pub fn inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .expect("run docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
