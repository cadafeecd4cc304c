//! Command-line flags of `cargo xtask` (clap lives here only). Options of
//! `mzbuild` are global, so they may also follow the subcommand
//! (`mzbuild fingerprint --release app`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Repository automation", version)]
pub enum Xtask {
    /// Content-addressed container images for this monorepo.
    Mzbuild(Box<Mzbuild>),
    /// Benchmarks of the build system itself.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Args, Debug)]
pub struct Mzbuild {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Repository root (default: $MZ_ROOT, else this workspace).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Build with the release profile (the default when $CI_LTO is truthy).
    #[arg(long, global = true)]
    pub release: bool,
    /// Build with the optimized profile (the default).
    #[arg(long, global = true)]
    pub optimized: bool,
    /// Build with the dev profile.
    #[arg(long, global = true)]
    pub dev: bool,
    /// Build with coverage instrumentation (default: $CI_COVERAGE_ENABLED).
    #[arg(long, global = true)]
    pub coverage: bool,
    /// Sanitizer: none, address, hwaddress, cfi, thread, leak, undefined (default: $CI_SANITIZER or none).
    #[arg(long, global = true, value_name = "NAME")]
    pub sanitizer: Option<String>,
    /// Target architecture: x86_64 or aarch64 (default: the host's). `tag` takes it several times
    /// (default: both).
    #[arg(long, global = true, value_name = "ARCH")]
    pub arch: Vec<String>,
    /// Registry that specs point at and `ensure` publishes to, host[:port]/path (default: the
    /// configured registries, the first for specs). A configured registry moves first; any other
    /// becomes the only one.
    #[arg(long, global = true, value_name = "REGISTRY")]
    pub image_registry: Option<String>,
    /// Prefix for image names in their specs.
    #[arg(long, global = true, value_name = "PREFIX")]
    pub image_prefix: Option<String>,
    /// Treat configuration warnings (e.g. unknown keys) as errors.
    #[arg(long, global = true)]
    pub strict: bool,
    /// Neither use nor update mzbuild's caches (listing, blob hashes, fingerprint memos, all under
    /// .git/mzbuild): list the tree by walking it and hash every input by reading it.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Progress on stderr: `auto` draws a live status line when stderr is a terminal, `plain`
    /// prints lines only (what CI logs get), `tty` always draws the status line.
    #[arg(long, global = true, value_enum, default_value_t = Progress::Auto, value_name = "WHEN")]
    pub progress: Progress,
    /// Colours on stderr: `auto` per NO_COLOR / CLICOLOR_FORCE, else when stderr is a terminal.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,
    /// Trust signatures by this public key (a cosign.pub), for this run, beside the keys of
    /// Cargo.toml's `[workspace.metadata.mzbuild] trust`: published tags then count only when
    /// signed by a trusted key. May be given several times.
    #[arg(long, global = true, value_name = "PATH")]
    pub trust_key: Vec<PathBuf>,
    /// Stream the build logs (buildx, cargo) to stderr as they are written.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    #[default]
    Auto,
    Plain,
    Tty,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Color {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    List(List),
    Fingerprint(Fingerprint),
    Spec(Spec),
    Describe(Describe),
    Graph(Graph),
    Build(Build),
    Acquire(Acquire),
    Ensure(Ensure),
    Check(Check),
    Verify(Verify),
    Repair(Repair),
    Tag(Tag),
    Sign(Sign),
    Attestation(Attestation),
    Gc(Gc),
    Run(Run),
    Diff(Diff),
    Explain(Explain),
    Lint(Lint),
    #[command(subcommand)]
    Hook(Hook),
    Completions(Completions),
    Man(Man),
}

/// The git pre-push hook: lint and diff the pushed commits, print what CI will rebuild.
#[derive(Subcommand, Debug)]
pub enum Hook {
    /// Write the pre-push hook (refuses to replace a hook that is not mzbuild's without --force).
    Install {
        #[arg(long)]
        force: bool,
    },
    /// Remove mzbuild's pre-push hook.
    Uninstall,
    /// What the hook runs: reads git's `local_ref local_sha remote_ref remote_sha` lines on stdin.
    PrePush {
        /// The remote's name and URL, as git passes them (a new branch is compared with the
        /// remote's default branch).
        args: Vec<String>,
    },
}

/// Check every configuration strictly and report every problem at once: cycles, unknown MZFROM,
/// Dockerfiles without FROM, pre-image outputs git does not ignore, untracked files git does not
/// ignore inside image contexts. Exit 1 if anything is found.
#[derive(Args, Debug)]
pub struct Lint {
    #[command(flatten)]
    pub rev: RevArg,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// The images whose fingerprints differ between REV and the work tree, with the reasons, and
/// whether each new tag is already published.
#[derive(Args, Debug)]
pub struct Diff {
    /// The revision to compare with (default: the merge-base with the current branch's upstream).
    pub rev: Option<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// Why IMAGE's fingerprint differs from a revision's or a recorded one: the full input diff,
/// through its dependencies.
#[derive(Args, Debug)]
pub struct Explain {
    pub image: String,
    /// A git revision, or a fingerprint recorded by an earlier build/ensure (default: the
    /// merge-base with the current branch's upstream).
    #[arg(long, value_name = "REV|FINGERPRINT")]
    pub against: Option<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// List the images, one name per line.
#[derive(Args, Debug)]
pub struct List {
    /// Print a JSON array of {name, path, fingerprint, spec, publish, depends_on}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub rev: RevArg,
}

/// `--rev REV`: read the repository at a git revision, not the work tree.
#[derive(Args, Debug, Clone, Default)]
pub struct RevArg {
    /// Use the files of this git revision (branch, tag, commit), read from git's object store
    /// without checking anything out, instead of the work tree.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

/// Print the images' fingerprints, one per line, in the order given.
#[derive(Args, Debug)]
pub struct Fingerprint {
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    #[command(flatten)]
    pub rev: RevArg,
}

/// Print the images' specs (registry/name:mzbuild-fingerprint), one per line, in the order given.
#[derive(Args, Debug)]
pub struct Spec {
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    #[command(flatten)]
    pub rev: RevArg,
}

/// Show an image's fingerprint, inputs and dependencies.
#[derive(Args, Debug)]
pub struct Describe {
    pub image: String,
    #[command(flatten)]
    pub rev: RevArg,
    /// Include the inputs and dependencies of all transitive dependencies.
    #[arg(long)]
    pub transitive: bool,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// Print the image dependency graph in Graphviz DOT.
#[derive(Args, Debug)]
pub struct Graph {}

/// Build images (and their dependencies missing locally) into the local engine; never pushes.
#[derive(Args, Debug)]
pub struct Build {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Rebuild the named images even when they exist locally.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (what would be built, in which waves, with which pre-images); build nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Make images available locally: pull what is published, build the rest; never pushes.
#[derive(Args, Debug)]
pub struct Acquire {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Publish every image that is not yet in every registry (the CI entry point): copy it from a
/// registry that has it, build and push it only when none has it. Never overwrites a tag.
#[derive(Args, Debug)]
pub struct Ensure {
    /// Images to ensure, with their dependencies (default: all).
    pub images: Vec<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when a tag has drifted (names different content in different registries;
    /// reported as `drifted`, fixed by `repair`).
    #[arg(long)]
    pub allow_drift: bool,
    /// Print the plan from the registry checks (what would be copied from where to where, built
    /// and pushed, in which waves, with which pre-images) on stdout; change nothing. Reads the
    /// registries with read credentials, as `check` does.
    #[arg(long, conflicts_with = "json")]
    pub dry_run: bool,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Exit 0 if every publishable image is in every registry with the same digest; list what is
/// missing or has drifted. Builds nothing.
#[derive(Args, Debug)]
pub struct Check {
    /// Images to check, with their dependencies (default: all).
    pub images: Vec<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Give up on a registry request (token requests included) after this long without an answer
    /// (e.g. 30s; default: 30 s per attempt, 3 attempts).
    #[arg(long, value_name = "DURATION", value_parser = mzbuild::build::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// Rebuild published images from the work tree in the local engine (under private tags, removed
/// afterwards; nothing is pushed) and compare each with the spec registry's image under its tag:
/// `reproduced`, or which config fields, layers and files (path, size, mode, mtime) differ.
/// Exit 1 on any difference. See docs/reproducible.md.
#[derive(Args, Debug)]
pub struct Verify {
    /// Images to verify (default: every publishable image); their dependencies are rebuilt too.
    pub images: Vec<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Make every registry hold the same content under each tag: re-point drifted tags (and fill
/// gaps) by copying from the spec registry, else the first registry that has the tag. Builds
/// nothing.
#[derive(Args, Debug)]
pub struct Repair {
    /// Images to repair, with their dependencies (default: all).
    pub images: Vec<String>,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Give up on a registry request (token requests included) after this long without an answer
    /// (e.g. 30s; default: 30 s per attempt, 3 attempts).
    #[arg(long, value_name = "DURATION", value_parser = mzbuild::build::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// Point a release tag (e.g. v1.2.3, latest) at a multi-arch index of each image's per-arch
/// `mzbuild-<fingerprint>` images, in every registry. Builds nothing: every per-arch image must be
/// published already (`ensure --arch ARCH` on each architecture). Moves a tag only when its content
/// changes.
#[derive(Args, Debug)]
pub struct Tag {
    /// The tag, e.g. v1.2.3, latest, unstable.
    pub tag: String,
    /// Images to tag, with their published dependencies (default: every published image).
    pub images: Vec<String>,
    /// Print what would be created, moved or left unchanged; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run as one JSON document on stdout (schema: docs/mzbuild.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Leave out `mainline: false` images, as the original does on tag builds (the default when
    /// $BUILDKITE_TAG is set).
    #[arg(long)]
    pub mainline_only: bool,
    /// Give up on a registry request (token requests included) after this long without an answer
    /// (e.g. 30s; default: 30 s per attempt, 3 attempts).
    #[arg(long, value_name = "DURATION", value_parser = mzbuild::build::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// Sign the current tag of each IMAGE in every registry that holds it, with the key of
/// Cargo.toml's `[workspace.metadata.mzbuild] signing` (from the environment): after reviewing a
/// tag the trust policy refused, or for images published before signing was set up.
#[derive(Args, Debug)]
pub struct Sign {
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// Print the provenance (in-toto statement, SLSA v1 predicate) attested for IMAGE's current tag,
/// once its signature checks out under the trust policy.
#[derive(Args, Debug)]
pub struct Attestation {
    pub image: String,
}

/// Delete the `mzbuild-*` tags that no kept revision needs from every registry (a dry run unless
/// --apply): kept are the images of the last --keep-revs commits of each kept branch, of the git
/// tags matching --keep-tags, and of every commit younger than --keep-days, for every --arch
/// (default: x86_64 and aarch64). A digest that any kept tag names is never deleted. See docs/gc.md.
#[derive(Args, Debug)]
pub struct Gc {
    /// Delete; without it, print what would be deleted.
    #[arg(long)]
    pub apply: bool,
    /// The local engine's `mzbuild-*` images of this repository instead of the registries' (never
    /// one a container, running or stopped, uses).
    #[arg(long)]
    pub local: bool,
    /// A branch whose last --keep-revs commits are kept (repeatable; default: the default branch,
    /// `origin/HEAD`, else `main` or `master`).
    #[arg(long = "keep-branch", value_name = "REF")]
    pub keep_branches: Vec<String>,
    /// How many commits of each kept branch are kept.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub keep_revs: usize,
    /// Git tags (glob, repeatable) whose commits' images are kept, dependencies included.
    #[arg(long = "keep-tags", value_name = "PATTERN", default_values_t = ["v*".to_string()])]
    pub keep_tags: Vec<String>,
    /// Images of commits (on any ref) younger than this many days, by committer date, are kept.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub keep_days: u64,
    /// Give up on a registry request (token requests included) after this long without an answer
    /// (e.g. 30s; default: 30 s per attempt, 3 attempts).
    #[arg(long, value_name = "DURATION", value_parser = mzbuild::build::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// Acquire an image, then `docker run --rm --init` it with ARGS.
#[derive(Args, Debug)]
pub struct Run {
    pub image: String,
    /// Arguments for the container (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub pool: PoolArgs,
}

/// Print a completion script for `cargo xtask mzbuild ...` (it completes the command `cargo`,
/// keeping cargo's own completion for everything else; image names come from `list`). Install:
/// `source <(cargo xtask mzbuild completions bash)` in ~/.bashrc, or save the output in your
/// shell's completion directory.
#[derive(Args, Debug)]
pub struct Completions {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A shell that `completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Write man pages: mzbuild.1 and one mzbuild-COMMAND.1 per command.
#[derive(Args, Debug)]
pub struct Man {
    /// The directory to write them to (made if missing), e.g. ~/.local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct PoolArgs {
    /// How many images to build at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Kill a build attempt that runs longer than this, and stop waiting for dependencies after
    /// this long (and a grace) without any build finishing or retrying (e.g. 90s, 20m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = mzbuild::build::parse_duration)]
    pub timeout: std::time::Duration,
    /// The buildx builder to build with (default: Cargo.toml's `[workspace.metadata.mzbuild]
    /// builders` entry for the arch, else buildx's current builder). Checked before any build.
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
}

impl PoolArgs {
    pub fn options(&self) -> mzbuild::PoolOptions {
        mzbuild::PoolOptions {
            jobs: self.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1),
            timeout: self.timeout,
            builder: self.builder.clone(),
            cache: Default::default(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Fingerprint a generated Materialize-shaped monorepo and compare with
    /// the floor (git listing + one single-threaded read-and-hash pass).
    Fingerprint(BenchFingerprint),
    /// Time a no-op `ensure` (every image already in the two local registries of ci/stack.sh)
    /// over the generated monorepo, beside the fingerprint-only time.
    Ensure(BenchEnsure),
    /// Fill a registry that lacks every image of (a buildable stand-in of) the generated monorepo:
    /// by copying from the other local registry, against rebuilding; time and bytes sent.
    Copy(BenchCopy),
    /// Build-context preparation: the normalised tar stream against the image directory
    /// buildx read before; time and peak memory, for a large context.
    Context(BenchContext),
    /// The cold-agent rebuild of an image with a slow RUN step below an edited file, with and
    /// without the shared layer cache (publishing to 127.0.0.1:5000).
    Cache(BenchCache),
}

#[derive(Args, Debug)]
pub struct BenchContext {
    /// Where to write the context (reused when it is there already).
    #[arg(long, default_value = "target/bench/context")]
    pub dir: std::path::PathBuf,
    /// Size of the large file in the context, in MiB (e.g. 500; the default is small, for smoke runs).
    #[arg(long, default_value_t = 20)]
    pub size_mb: usize,
    /// Repeat the tar-only measurement this many times.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run one build only (dir or tar) and print its numbers: how the benchmark measures each in a
    /// process of its own.
    #[arg(long, hide = true)]
    pub variant: Option<String>,
}

#[derive(Args, Debug)]
pub struct BenchCache {
    /// Where the benchmark's repository goes (removed after the run).
    #[arg(long, default_value = "target/bench")]
    pub dir: PathBuf,
    /// How long the image's RUN step takes.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub run_secs: u32,
    /// Measure this many times each way; report the medians.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Make the agent cold with `docker buildx prune -af` (the whole engine's build cache: only on
    /// a machine of its own) instead of forgetting this benchmark's image alone.
    #[arg(long)]
    pub prune_all: bool,
}

#[derive(Args, Debug)]
pub struct BenchCopy {
    #[command(flatten)]
    pub repo: GeneratedRepo,
    /// How many images to build at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct BenchEnsure {
    #[command(flatten)]
    pub repo: GeneratedRepo,
    /// Repeat each measurement this many times; report best and median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

#[derive(Args, Debug)]
pub struct BenchFingerprint {
    #[command(flatten)]
    pub repo: GeneratedRepo,
    /// Repeat each measurement this many times and report the best.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// The generated Materialize-shaped monorepo both benchmarks use.
#[derive(Args, Debug)]
pub struct GeneratedRepo {
    /// Where to generate the repository (reused when it already exists).
    #[arg(long, default_value = "target/bench/monorepo")]
    pub dir: PathBuf,
    /// Number of git files to generate (at least).
    #[arg(long, default_value_t = 50_000)]
    pub files: usize,
    /// Number of images.
    #[arg(long, default_value_t = 120)]
    pub images: usize,
}
