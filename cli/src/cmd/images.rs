//! `faultline images build`: container images of the bundled shop, of the agent and of
//! faultline itself (load workers and runs in a cluster), built FROM scratch with the
//! `docker` CLI. Each image holds one binary and, unless it is static, the shared
//! libraries `ldd` names (the dynamic loader too), each copied to the same absolute
//! path, so no base image (and no registry) is needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

use crate::exit::Exit;

/// Container images of the bundled shop, of the agent and of faultline.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImagesCommand {
    /// Build `faultline/shop`, `faultline/agent` and `faultline/faultline` FROM
    /// scratch, tagged with faultline's version, `latest` and --tag.
    ///
    /// Examples:
    ///   faultline images build
    ///   faultline images build --tag dev --bin-dir target/release
    ///   faultline images build agent faultline
    ///   docker run --rm -p 7000:7000 faultline/shop cache --listen 0.0.0.0:7000
    ///   docker run --rm faultline/faultline --version
    #[command(verbatim_doc_comment)]
    Build {
        /// The images to build, by their last name part [default: all three].
        #[arg(value_name = "IMAGE", value_parser = ["shop", "agent", "faultline"])]
        images: Vec<String>,
        /// One more tag for every image.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// Where the `shop`, `faultline-agent` and `faultline` binaries are [default:
        /// beside the running `faultline` executable].
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
}

/// One image: its repository, the binary in it, and its title label.
struct Image {
    repo: &'static str,
    binary: &'static str,
    kind: &'static str,
    title: &'static str,
}

const IMAGES: [Image; 3] = [
    Image {
        repo: "faultline/shop",
        binary: "shop",
        kind: "shop",
        title: "faultline shop",
    },
    Image {
        repo: "faultline/agent",
        binary: "faultline-agent",
        kind: "agent",
        title: "faultline agent",
    },
    // The CLI itself: load workers (`faultline worker`) and runs (`faultline run`) as
    // pods, deploy/kubernetes/.
    Image {
        repo: "faultline/faultline",
        binary: "faultline",
        kind: "faultline",
        title: "faultline",
    },
];

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let ImagesCommand::Build {
        images,
        tag,
        bin_dir,
    } = args.command;
    let chosen: Vec<&Image> = IMAGES
        .iter()
        .filter(|i| images.is_empty() || images.iter().any(|n| n == i.kind))
        .collect();
    let dir = match bin_dir {
        Some(d) => d,
        None => faultline_agent::agent::beside_current_exe()
            .into_iter()
            .next()
            .context("cannot tell the directory of the running faultline executable")?,
    };
    let binaries: Vec<PathBuf> = chosen.iter().map(|i| dir.join(i.binary)).collect();
    for b in &binaries {
        if !b.is_file() {
            bail!(
                "{} is missing: build it first (`cargo build --workspace`, or --release), \
                 or point --bin-dir at the directory that holds it",
                b.display()
            );
        }
    }
    docker_answers()?;
    let version = env!("CARGO_PKG_VERSION");
    let mut tags = vec![version.to_owned(), "latest".to_owned()];
    tags.extend(tag);
    for (image, bin) in chosen.into_iter().zip(&binaries) {
        build(image, bin, &tags)?;
        let size = image_size(&format!("{}:{version}", image.repo))?;
        println!(
            "{}:{version} ({}) {:.1} MB",
            image.repo,
            tags[1..].join(", "),
            size as f64 / 1e6
        );
    }
    Ok(Exit::Success)
}

/// `docker` with the legacy builder unless the user chose otherwise (this engine's CLI
/// may lack buildx, and the legacy builder needs nothing more for `FROM scratch`).
fn docker() -> Command {
    let mut c = Command::new("docker");
    if std::env::var_os("DOCKER_BUILDKIT").is_none() {
        c.env("DOCKER_BUILDKIT", "0");
    }
    c
}

/// Runs a docker command; `Err` only when it cannot be started at all.
fn spawn_docker(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "docker is not installed (no `docker` on PATH): install Docker to build images"
            )
        } else {
            anyhow::anyhow!("cannot run docker: {e}")
        }
    })
}

/// Runs a docker command and returns its output, failing with its stderr.
fn run_docker(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
    let out = spawn_docker(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Fails clearly when docker is missing or its daemon does not answer.
fn docker_answers() -> anyhow::Result<()> {
    let out = spawn_docker(docker().args(["version", "--format", "{{.Server.Version}}"]))?;
    if !out.status.success() {
        bail!(
            "the Docker daemon does not answer (is it running, and may this user reach it?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Builds one image from a context in a fresh temporary directory, removed afterwards.
fn build(image: &Image, bin: &Path, tags: &[String]) -> anyhow::Result<()> {
    let ctx = std::env::temp_dir().join(format!(
        "faultline-image-{}-{}-{}",
        image.kind,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let result = write_context(&ctx, image, bin).and_then(|()| {
        let mut c = docker();
        c.args(["build", "-q"]);
        for t in tags {
            c.arg("-t").arg(format!("{}:{t}", image.repo));
        }
        c.arg(&ctx);
        run_docker(c, &format!("building {}", image.repo)).map(drop)
    });
    let _ = std::fs::remove_dir_all(&ctx);
    result
}

/// The build context: `Dockerfile`, and under `rootfs/` the binary and its libraries at
/// the paths they have in the image.
fn write_context(ctx: &Path, image: &Image, bin: &Path) -> anyhow::Result<()> {
    let rootfs = ctx.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let at = format!("/{}", image.binary);
    copy_into(&rootfs, bin, Path::new(&at))?;
    for lib in shared_libraries(bin)? {
        copy_into(&rootfs, &lib, &lib)?;
    }
    let dockerfile = format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         LABEL org.opencontainers.image.title=\"{}\" \
         org.opencontainers.image.version=\"{}\" \
         faultline.image=\"{}\"\n\
         ENTRYPOINT [\"{at}\"]\n",
        image.title,
        env!("CARGO_PKG_VERSION"),
        image.kind,
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).context("writing the Dockerfile")?;
    Ok(())
}

/// Copies `from` (its real file, symlinks resolved) to `rootfs` + `to`.
fn copy_into(rootfs: &Path, from: &Path, to: &Path) -> anyhow::Result<()> {
    let real =
        std::fs::canonicalize(from).with_context(|| format!("resolving {}", from.display()))?;
    let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(&real, &dest)
        .with_context(|| format!("copying {} to {}", real.display(), dest.display()))?;
    Ok(())
}

/// The shared libraries `ldd` names for `bin` (absolute paths, the loader included);
/// none for a static binary.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd (needed to find the binary's shared libraries)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("statically linked") || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", bin.display(), text.trim());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!(
                "{}: a shared library is missing: {}",
                bin.display(),
                line.trim()
            );
        }
        // `name => /path (0x...)`, `/path (0x...)`; the vDSO has no path.
        let path = line.split("=>").last().unwrap_or(line).trim();
        let path = path.split(" (").next().unwrap_or(path).trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// An image's size in bytes, as `docker image inspect` reports it.
fn image_size(reference: &str) -> anyhow::Result<u64> {
    let mut c = docker();
    c.args(["image", "inspect", "--format", "{{.Size}}", reference]);
    let out = run_docker(c, &format!("`docker image inspect {reference}`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("docker's size of {reference}: {text:?}"))
}
