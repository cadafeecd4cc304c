//! The build context, as a normalised tar streamed to buildx's stdin: the
//! image's input files (git's view, exactly what its fingerprint covers)
//! plus the files its pre-images wrote in this run, minus what its
//! `.dockerignore` leaves out; sorted by path, every entry with mtime
//! [`SOURCE_DATE_EPOCH`], uid and gid 0, no owner names, no extended
//! attributes, and git's modes (644, or 755 for an executable; symlinks as
//! links). Nothing of the image directory is deleted: an ignored file that
//! no pre-image wrote (a `.env`, a `.venv/`) is simply not sent.
//!
//! The rewritten Dockerfile travels in the tar at the Dockerfile's own path
//! (buildx reads `-f` inside a tar context; a Dockerfile outside it is not
//! found): a `COPY . x` copies the same files as from the directory, the
//! Dockerfile as built (its `MZFROM` lines as `FROM <spec>`).

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::dockerignore::DockerIgnore;

/// The one time every build uses: file mtimes in the context, and buildx's
/// `SOURCE_DATE_EPOCH` (image creation time, history). A constant, so that a
/// fingerprint names one image whatever the commit or the day.
pub const SOURCE_DATE_EPOCH: u64 = 0;

/// The Dockerfile's path in the context.
pub const DOCKERFILE: &str = "Dockerfile";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File {
        executable: bool,
        size: u64,
    },
    Symlink(PathBuf),
    /// The rewritten Dockerfile, from memory.
    Dockerfile,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Relative to the image directory, `/`-separated.
    path: String,
    kind: Kind,
}

/// One image's build context, ready to be written as a tar.
pub struct BuildContext {
    /// The image directory on disk.
    dir: PathBuf,
    entries: Vec<Entry>,
    dockerfile: Vec<u8>,
}

impl BuildContext {
    /// The context of the image in `dir` (repository-relative) of the
    /// repository at `root`: `visible`, the repository-relative files git
    /// sees below `dir`, and `written`, the files its pre-images wrote (as
    /// absolute paths), with `dockerfile` (the rewritten one) at
    /// [`DOCKERFILE`]. Errors name the image.
    pub fn new(
        root: &Path,
        dir: &str,
        image: &str,
        visible: &[String],
        written: &[PathBuf],
        dockerfile: Vec<u8>,
    ) -> Result<BuildContext> {
        let base = root.join(dir);
        let prefix = format!("{dir}/");
        let mut files: BTreeSet<String> =
            visible.iter().filter_map(|f| f.strip_prefix(&prefix)).map(str::to_string).collect();
        for w in written {
            // Pre-images write below their image's directory.
            if let Some(rel) = w.strip_prefix(&base).ok().and_then(|r| r.to_str()) {
                files.insert(rel.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
        let ignore = if files.contains(".dockerignore") {
            let path = base.join(".dockerignore");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("image `{image}`: reading {}", path.display()))?;
            Some(DockerIgnore::parse(&text, &format!("{dir}/.dockerignore"))?)
        } else {
            None
        };
        files.remove(DOCKERFILE);
        if let Some(ig) = &ignore {
            files.retain(|f| !ig.excludes(f));
        }
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        for f in files.iter().map(String::as_str).chain([DOCKERFILE]) {
            let mut at = f;
            while let Some((parent, _)) = at.rsplit_once('/') {
                if !dirs.insert(parent.to_string()) {
                    break;
                }
                at = parent;
            }
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(files.len() + dirs.len() + 1);
        entries.extend(dirs.into_iter().map(|path| Entry { path, kind: Kind::Dir }));
        entries.push(Entry { path: DOCKERFILE.into(), kind: Kind::Dockerfile });
        for f in files {
            let path = base.join(&f);
            let meta = std::fs::symlink_metadata(&path).with_context(|| {
                format!(
                    "image `{image}`: {dir}/{f} is in its context but cannot be read; was it removed during the build?"
                )
            })?;
            let kind = if meta.file_type().is_symlink() {
                Kind::Symlink(
                    std::fs::read_link(&path).with_context(|| format!("reading the link {}", path.display()))?,
                )
            } else if meta.is_file() {
                Kind::File { executable: executable(&meta), size: meta.len() }
            } else {
                bail!("image `{image}`: {dir}/{f} is in its context but is not a file or a symlink");
            };
            entries.push(Entry { path: f, kind });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(BuildContext { dir: base, entries, dockerfile })
    }

    /// The paths the tar holds (directories end in `/`), in order.
    pub fn paths(&self) -> Vec<String> {
        self.entries.iter().map(|e| if e.kind == Kind::Dir { format!("{}/", e.path) } else { e.path.clone() }).collect()
    }

    /// The bytes of file content the tar carries.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                Kind::Dockerfile => self.dockerfile.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Write the context as a tar to `out`, reading one file at a time
    /// through a fixed buffer (memory does not grow with the context).
    pub fn write_tar(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 16, out));
        tar.follow_symlinks(false);
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(SOURCE_DATE_EPOCH);
            match &e.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{}/", e.path), io::empty())?;
                }
                Kind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, &e.path, target)?;
                }
                Kind::Dockerfile => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(self.dockerfile.len() as u64);
                    tar.append_data(&mut h, &e.path, self.dockerfile.as_slice())?;
                }
                Kind::File { executable, .. } => {
                    let path = self.dir.join(&e.path);
                    let file = std::fs::File::open(&path)
                        .map_err(|err| io::Error::new(err.kind(), format!("opening {}: {err}", path.display())))?;
                    // The size now, which the header must match.
                    let size = file.metadata()?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(if *executable { 0o755 } else { 0o644 });
                    h.set_size(size);
                    let exact = Exact { inner: file.take(size), left: size, path: &path };
                    tar.append_data(&mut h, &e.path, exact)?;
                }
            }
        }
        tar.into_inner()?.flush()
    }
}

/// A file's first `left` bytes, or an error if it has become shorter since
/// its size was read (a tar entry must hold exactly what its header says).
struct Exact<'a, R> {
    inner: R,
    left: u64,
    path: &'a Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} became shorter while it was sent to the build; do not change an image's files during its build",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_the_visible_files_and_the_outputs_normalised() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let d = root.join("images/app");
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::create_dir_all(d.join(".venv/bin")).unwrap();
        for (f, text) in [
            ("Dockerfile", "MZFROM base\nCOPY . /app\n"),
            ("etc/conf", "c"),
            (".env", "TOKEN=secret"),
            (".venv/bin/python", "#!"),
            ("out.bin", "built"),
            ("notes.md", "n"),
            (".dockerignore", "*.md\n"),
        ] {
            std::fs::write(d.join(f), text).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join("out.bin"), std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::symlink("conf", d.join("etc/link")).unwrap();
        }
        let mut visible: Vec<String> =
            ["Dockerfile", "etc/conf", "notes.md", ".dockerignore"].iter().map(|f| format!("images/app/{f}")).collect();
        if cfg!(unix) {
            visible.push("images/app/etc/link".into());
        }
        let ctx = BuildContext::new(
            root,
            "images/app",
            "app",
            &visible,
            &[d.join("out.bin")],
            b"FROM reg/base:mzbuild-X\nCOPY . /app\n".to_vec(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        ctx.write_tar(&mut bytes).unwrap();
        let mut seen = Vec::new();
        let mut ar = tar::Archive::new(bytes.as_slice());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().display().to_string();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0), "{path}");
            assert_eq!(h.username().unwrap(), Some(""));
            seen.push(format!("{path} {:o} {body}", h.mode().unwrap()));
        }
        let mut expected = vec![
            ".dockerignore 644 *.md\n",
            "Dockerfile 644 FROM reg/base:mzbuild-X\nCOPY . /app\n",
            "etc/ 755 ",
            "etc/conf 644 c",
            "out.bin 755 built",
        ];
        if cfg!(unix) {
            expected.insert(4, "etc/link 777 ");
        }
        assert_eq!(seen, expected);
        // The ignored files are still there.
        assert!(d.join(".env").exists() && d.join(".venv/bin/python").exists());
    }
}
