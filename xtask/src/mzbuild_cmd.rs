//! `cargo xtask mzbuild ...`: each subcommand's flags become the engine's
//! options, and the engine does the rest.

use std::path::PathBuf;

use anyhow::{bail, Result};
use mzbuild::commands::{build, check, diff, ensure, gc, hook, introspect, lint, repair, sign, tag};
use mzbuild::{report, ui, Arch, Ctx, Options, ProcessEnv, Status};

use crate::flags::{self, Command, GlobalArgs};

impl flags::Mzbuild {
    pub fn run(self) -> Result<Status> {
        let g = &self.global;
        let progress = match g.progress {
            flags::Progress::Auto => ui::ProgressMode::Auto,
            flags::Progress::Plain => ui::ProgressMode::Plain,
            flags::Progress::Tty => ui::ProgressMode::Tty,
        };
        let color = match g.color {
            flags::Color::Auto => ui::ColorChoice::Auto,
            flags::Color::Always => ui::ColorChoice::Always,
            flags::Color::Never => ui::ColorChoice::Never,
        };
        ui::configure(progress, color, g.verbose, &ProcessEnv);
        if self.global.arch.len() > 1 && !matches!(self.command, Command::Tag(_) | Command::Gc(_)) {
            bail!("--arch is given {} times: only `tag` and `gc` take several architectures", self.global.arch.len());
        }
        let archs = self.global.arch.clone();
        if let Command::Lint(c) = &self.command {
            // Lint reads a configuration that may not load: no Ctx.
            let opts = options(&self.global)?;
            let root = opts.root_dir(workspace_root(), &ProcessEnv);
            let root_arg = opts.root_arg(&root, workspace_root(), &ProcessEnv);
            let report = match c.json {
                true => Some(lint_report(&opts, &root, c.rev.rev.as_deref())?),
                false => None,
            };
            return lint(&root, root_arg.as_deref(), c.rev.rev.as_deref(), self.global.strict, report);
        }
        // Generated from the flags alone: no repository needed.
        match &self.command {
            Command::Completions(c) => return print(crate::completions::completions(c.shell)),
            Command::Man(m) => return crate::completions::write_man_pages(&m.out),
            _ => {}
        }
        if let Command::Hook(h) = &self.command {
            let opts = options(&self.global)?;
            let root = opts.root_dir(workspace_root(), &ProcessEnv);
            return match h {
                flags::Hook::Install { force } => hook::install(&root, *force, &workspace_root()),
                flags::Hook::Uninstall => hook::uninstall(&root),
                flags::Hook::PrePush { args } => {
                    let opts = mzbuild::Options { root: Some(root.clone()), ..opts };
                    let remote = args.first().map(String::as_str);
                    hook::pre_push(&opts, &root, remote, Box::new(ProcessEnv), workspace_root())
                }
            };
        }
        let rev = match &self.command {
            Command::List(c) => c.rev.rev.clone(),
            Command::Fingerprint(c) => c.rev.rev.clone(),
            Command::Spec(c) => c.rev.rev.clone(),
            Command::Describe(c) => c.rev.rev.clone(),
            _ => None,
        };
        let mut ctx = Ctx::load(&Options { rev, ..options(&self.global)? }, workspace_root(), Box::new(ProcessEnv))?;
        match self.command {
            Command::List(c) => c.run(&ctx),
            Command::Fingerprint(c) => c.run(&ctx),
            Command::Spec(c) => c.run(&ctx),
            Command::Describe(c) => c.run(&ctx),
            Command::Graph(c) => c.run(&ctx),
            Command::Build(c) => c.run(&ctx),
            Command::Acquire(c) => c.run(&ctx),
            Command::Ensure(c) => c.run(&ctx),
            Command::Check(c) => c.run(&ctx),
            Command::Verify(c) => c.run(&mut ctx),
            Command::Repair(c) => c.run(&ctx),
            Command::Tag(c) => c.run(&ctx, &archs),
            Command::Sign(c) => sign::sign(&ctx, &c.images),
            Command::Attestation(c) => sign::attestation(&ctx, &c.image),
            Command::Gc(c) => c.run(&ctx, &archs),
            Command::Run(c) => c.run(&ctx),
            Command::Diff(c) => c.run(&ctx),
            Command::Explain(c) => c.run(&ctx),
            Command::Lint(_) | Command::Hook(_) | Command::Completions(_) | Command::Man(_) => {
                unreachable!("handled above")
            }
        }
    }
}

pub fn options(global: &GlobalArgs) -> Result<Options> {
    Ok(Options {
        root: global.root.clone(),
        profile: mzbuild::profile_flag(global.release, global.optimized, global.dev)?,
        // `tag` takes several (see Tag::run); for it the settings' own arch is unused.
        arch: if global.arch.len() == 1 { global.arch.first().cloned() } else { None },
        coverage: global.coverage,
        sanitizer: global.sanitizer.clone(),
        image_registry: global.image_registry.clone(),
        image_prefix: global.image_prefix.clone(),
        strict: global.strict,
        rev: None,
        no_cache: global.no_cache,
        trust_keys: global.trust_key.clone(),
    })
}

/// The workspace that holds this xtask.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Print a read-only command's result.
fn print(text: Result<String>) -> Result<Status> {
    ui::result(&text?);
    Ok(Status::Success)
}

impl flags::List {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        print(introspect::list(ctx, self.json))
    }
}

impl flags::Fingerprint {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        print(introspect::fingerprint(ctx, &self.images))
    }
}

impl flags::Spec {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        print(introspect::spec(ctx, &self.images))
    }
}

impl flags::Describe {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        if self.json {
            let report = report::Report::new(ctx, "describe");
            let row = introspect::describe_image(ctx, &self.image, self.transitive)?;
            report.emit(&[row], report::RunResult::Success);
            return Ok(Status::Success);
        }
        print(introspect::describe(ctx, &self.image, self.transitive))
    }
}

impl flags::Graph {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        print(Ok(introspect::graph(ctx)))
    }
}

impl flags::Build {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        if self.dry_run {
            return mzbuild::build::dry_run::build(ctx, &self.images, self.force);
        }
        build::build(ctx, &self.images, self.force, &self.pool.options(), self.json)
    }
}

impl flags::Acquire {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        if self.json {
            return build::acquire_json(ctx, &self.images, &self.pool.options());
        }
        let fps = build::acquire(ctx, &self.images, &self.pool.options())?;
        let specs: String =
            self.images.iter().map(|i| format!("{}\n", ctx.naming.spec(i, &fps[i].fingerprint))).collect();
        print(Ok(specs))
    }
}

impl flags::Ensure {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        if self.dry_run {
            return mzbuild::publish::dry_run::ensure(ctx, &self.images, &self.pool.options());
        }
        ensure::ensure(ctx, &self.images, &self.pool.options(), self.json, self.allow_drift)
    }
}

impl flags::Check {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        check::check(ctx, &self.images, self.timeout, self.json)
    }
}

impl flags::Verify {
    fn run(self, ctx: &mut Ctx) -> Result<Status> {
        mzbuild::commands::verify::verify(ctx, &self.images, &self.pool.options(), None, self.json)
    }
}

impl flags::Repair {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        repair::repair(ctx, &self.images, self.json, self.timeout)
    }
}

impl flags::Tag {
    fn run(self, ctx: &Ctx, archs: &[String]) -> Result<Status> {
        let archs: Vec<Arch> = if archs.is_empty() {
            vec![Arch::X86_64, Arch::Aarch64]
        } else {
            archs.iter().map(|a| Arch::parse(a)).collect::<Result<_>>()?
        };
        let opts = tag::TagOptions {
            archs,
            dry_run: self.dry_run,
            mainline_only: self.mainline_only,
            timeout: self.timeout,
            json: self.json,
        };
        tag::tag(ctx, &self.tag, &self.images, &opts)
    }
}

impl flags::Gc {
    fn run(self, ctx: &Ctx, archs: &[String]) -> Result<Status> {
        let archs: Vec<Arch> = if archs.is_empty() {
            vec![Arch::X86_64, Arch::Aarch64]
        } else {
            archs.iter().map(|a| Arch::parse(a)).collect::<Result<_>>()?
        };
        let opts = gc::GcOptions {
            archs,
            keep_branches: self.keep_branches,
            keep_revs: self.keep_revs,
            keep_tags: self.keep_tags,
            keep_days: self.keep_days,
            apply: self.apply,
            timeout: self.timeout,
            local: self.local,
        };
        gc::gc(ctx, &opts)
    }
}

impl flags::Run {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        build::run(ctx, &self.image, &self.args, &self.pool.options())
    }
}

impl flags::Diff {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        diff::diff(ctx, self.rev.as_deref(), self.json)
    }
}

impl flags::Explain {
    fn run(self, ctx: &Ctx) -> Result<Status> {
        diff::explain(ctx, &self.image, self.against.as_deref(), self.json)
    }
}

/// `lint [--rev REV]`: problems on stdout, exit 1 when there are any;
/// notes on stderr. `root_arg`: the `--root` a suggested command needs.
/// `lint --json`'s report: the settings of the flags, the revision read.
fn lint_report(opts: &Options, root: &std::path::Path, rev: Option<&str>) -> Result<report::Report> {
    let settings = mzbuild::Settings::resolve(
        &mzbuild::SettingsArgs {
            profile: opts.profile,
            arch: opts.arch.clone(),
            coverage: opts.coverage,
            sanitizer: opts.sanitizer.clone(),
        },
        &ProcessEnv,
    )?;
    let git = mzbuild::git::GitRepo::open(root);
    let (revision, source) = match rev {
        Some(r) => (git.resolve_commit(r).ok(), "revision"),
        None => (git.resolve_commit("HEAD").ok(), "work-tree"),
    };
    Ok(report::Report::bare("lint", &settings).with_revision(revision, source))
}

pub fn lint(
    root: &std::path::Path,
    root_arg: Option<&str>,
    rev: Option<&str>,
    strict: bool,
    report: Option<report::Report>,
) -> Result<Status> {
    let tree = match rev {
        Some(r) => mzbuild::git::tree::Tree::list_rev(root, r)?,
        None => mzbuild::git::tree::Tree::list(root)?,
    };
    let label = tree.label();
    // Whether RUN steps can be reproducible depends on the current builder.
    let builder = mzbuild::docker::Docker::new(&ProcessEnv).known_builder_features(None);
    let findings = lint::lint_for(tree, strict, builder)?;
    for n in &findings.notes {
        ui::note(n);
    }
    let problems = &findings.problems;
    if let Some(report) = &report {
        let rows: Vec<report::Problem> = problems
            .iter()
            .map(|p| report::Problem { file: p.path().map(str::to_string), message: p.to_string() })
            .collect();
        report.emit(&rows, if rows.is_empty() { report::RunResult::Success } else { report::RunResult::Failure });
    }
    if problems.is_empty() {
        ui::progress(format_args!("lint: no problems in {label}"));
        return Ok(Status::Success);
    }
    if report.is_none() {
        ui::result(&problems.iter().map(|f| format!("{f}\n")).collect::<String>());
    }
    ui::error(format_args!(
        "lint: {} problem{} in {label} (listed above); fix them and run `cargo xtask mzbuild {}lint` again",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        root_arg.map_or(String::new(), |r| format!("{r} "))
    ));
    Ok(Status::Failure)
}
