//! The Docker engine as the container tests see it: the locally built images, and the
//! engine's own word on a container (`docker inspect`) or on what carries a label.

use std::collections::HashSet;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::Mutex;

use crate::bin;

/// Builds `faultline/shop` and `faultline/agent` from this build's binaries, tagged
/// `tag` (and faultline's version and `latest`, which the Docker runtime and its reaper
/// use). Test processes share the work: under a lock beside the binaries, a stamp
/// records which binaries the tag was built from, and the build runs again only when
/// they changed or the images are gone. A missing daemon fails the test here.
pub fn images(tag: &str) -> String {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = built.get_or_insert_with(HashSet::new);
    if built.contains(tag) {
        return tag.to_owned();
    }
    let dir = crate::bin_dir();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".e2e-images.lock"))
        .expect("open the image lock");
    // SAFETY: flock on a descriptor this function owns; released when `lock` drops.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    let stamp = dir.join(format!(".e2e-images-{tag}.stamp"));
    let made_from = ["shop", "faultline-agent"]
        .map(|b| {
            let m = std::fs::metadata(bin(b)).expect("the binary");
            format!("{b} {:?} {}", m.modified().ok(), m.len())
        })
        .join("\n");
    // The tag, `latest` and the version tag all name the image this tag was built
    // as: another build (a benchmark's, say) may have moved the shared tags since.
    let id = |reference: &str| {
        Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", reference])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let present = ["faultline/shop", "faultline/agent"].iter().all(|repo| {
        let mine = id(&format!("{repo}:{tag}"));
        mine.is_some()
            && mine == id(&format!("{repo}:latest"))
            && mine == id(&format!("{repo}:{}", env!("CARGO_PKG_VERSION")))
    });
    if !present || std::fs::read_to_string(&stamp).ok().as_deref() != Some(made_from.as_str()) {
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
        std::fs::write(&stamp, &made_from).expect("write the image stamp");
    }
    drop(lock);
    built.insert(tag.to_owned());
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
