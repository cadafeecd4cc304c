//! The shared layer cache on the `docker buildx build` command line: which
//! earlier images a build imports layers from (`--cache-from`) and what it
//! exports for later builds (`--cache-to`). Kept apart from
//! [`super::buildx_args`]: the flags are appended to its arguments.
//!
//! Measured on buildx 0.13 with the `docker` driver (see `docs/cache.md`):
//! importing never changes the image (the same digest with and without
//! `--cache-from`); inline export adds the cache records to the image's
//! config, with the time each layer entered the builder's cache, so the
//! same fingerprint built on two agents gets two digests. A registry cache
//! (a separate manifest, `mzbuild-<fp>-cache`) leaves the image alone, but
//! the `docker` driver cannot export one (unless the engine uses the
//! containerd image store). There, the image's inline cache goes to a tag
//! of its own beside the image ([`Export::InlineBeside`]): a second,
//! fully cached build of the same Dockerfile with `--cache-to type=inline`,
//! pushed as `mzbuild-<fp>-cache` (the builder's own layers, which the
//! published image's normalised ones are not); the image itself carries no
//! cache metadata.

use super::{last_line, Builder, Docker};

/// The tag of the registry cache that the build of `image_tag`
/// (`mzbuild-<fp>`) exports.
pub fn cache_tag(image_tag: &str) -> String {
    format!("{image_tag}-cache")
}

/// What one build exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// `--cache-to type=inline`.
    Inline,
    /// `--cache-to type=registry,ref=REF,mode=max`.
    Registry(String),
    /// After the build, the same build again (all cached) with `--cache-to
    /// type=inline`, pushed to REF only.
    InlineBeside(String),
}

/// One build's cache flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheFlags {
    /// References to import from, most useful first.
    pub from: Vec<String>,
    pub to: Option<Export>,
}

impl CacheFlags {
    /// The arguments, to append to [`super::buildx_args`]'s.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![];
        for r in &self.from {
            args.push(format!("--cache-from=type=registry,ref={r}"));
        }
        match &self.to {
            Some(Export::Inline) => args.push("--cache-to=type=inline".into()),
            Some(Export::Registry(r)) => args.push(format!("--cache-to=type=registry,ref={r},mode=max")),
            Some(Export::InlineBeside(_)) | None => {}
        }
        args
    }

    /// The reference of the inline cache pushed beside the image, if any.
    pub fn beside(&self) -> Option<&str> {
        match &self.to {
            Some(Export::InlineBeside(r)) => Some(r),
            _ => None,
        }
    }
}

/// The flags of the build that pushes the inline cache beside the image.
pub const BESIDE_ARGS: &[&str] = &["--cache-to=type=inline"];

impl Docker {
    /// Whether the builds' builder (`builder`, else buildx's current one)
    /// can export a registry cache: every driver but `docker`, and the
    /// `docker` driver of an engine with the containerd image store.
    pub fn can_export_cache(&self, builder: Option<&Builder>) -> bool {
        let mut args = vec!["buildx", "inspect"];
        if let Some(b) = builder {
            args.push(&b.name);
        }
        let Ok(out) = self.command(&args).output() else { return false };
        if !out.status.success() {
            return false;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let driver = text.lines().find_map(|l| l.strip_prefix("Driver:")).map(str::trim).unwrap_or("");
        if driver != "docker" {
            return !driver.is_empty();
        }
        let mut info = vec![];
        if let Some(c) = builder.and_then(|b| b.context.as_deref()) {
            info.extend(["--context", c]);
        }
        info.extend(["info", "--format", "{{json .DriverStatus}}"]);
        match self.command(&info).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).contains("io.containerd.snapshotter"),
            Ok(o) => {
                crate::ui::note(format_args!("cannot ask the engine for its image store: {}", last_line(&o.stderr)));
                false
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn cache_flags() {
        assert!(CacheFlags::default().args().is_empty());
        let flags = CacheFlags {
            from: vec!["r/app:mzbuild-BASE".into(), "r/app:mzbuild-BASE-cache".into()],
            to: Some(Export::Registry("r/app:mzbuild-NEW-cache".into())),
        };
        expect![[r#"--cache-from=type=registry,ref=r/app:mzbuild-BASE --cache-from=type=registry,ref=r/app:mzbuild-BASE-cache --cache-to=type=registry,ref=r/app:mzbuild-NEW-cache,mode=max"#]]
        .assert_eq(&flags.args().join(" "));
        let inline = CacheFlags { from: vec![], to: Some(Export::Inline) };
        assert_eq!(inline.args(), ["--cache-to=type=inline"]);
        assert_eq!(cache_tag("mzbuild-FP"), "mzbuild-FP-cache");
        let beside = CacheFlags {
            from: vec!["r/app:mzbuild-BASE-cache".into()],
            to: Some(Export::InlineBeside("r/app:mzbuild-NEW-cache".into())),
        };
        assert_eq!(beside.args(), ["--cache-from=type=registry,ref=r/app:mzbuild-BASE-cache"]);
        assert_eq!(beside.beside(), Some("r/app:mzbuild-NEW-cache"));
        assert_eq!(inline.beside(), None);
    }
}
