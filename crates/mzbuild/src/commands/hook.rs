//! The pre-push hook: `hook install` writes `.git/hooks/pre-push` (where
//! git looks for it, `core.hooksPath` included), `hook uninstall` removes
//! it, and `hook pre-push` is what it runs: for every pushed commit (git's
//! `local_ref local_sha remote_ref remote_sha` lines on stdin) it lints the
//! commit and diffs it against what the remote has, reading both from git's
//! object store. It never stashes, checks out or touches the work tree.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::diff::{default_base, diff_images, render_diff, short_sha};
use super::lint;
use crate::ctx::{Ctx, Options, Status};
use crate::git::tree::Tree;
use crate::git::GitRepo;
use crate::ui;

/// The line that marks a hook as ours.
const MARKER: &str = "# mzbuild pre-push hook";

/// Where git looks for the pre-push hook.
pub fn hook_path(root: &Path) -> Result<PathBuf> {
    let git = GitRepo::open(root);
    let out = git.run(&["rev-parse", "--git-path", "hooks/pre-push"])?;
    Ok(root.join(String::from_utf8_lossy(&out).trim()))
}

/// The git config key (of the clone, in `.git/config`: never committed)
/// naming the workspace whose `cargo xtask` checks a repository that has
/// none of its own (e.g. Materialize's, checked with `--root`).
pub const WORKSPACE_KEY: &str = "mzbuild.workspace";

/// The hook script. It runs `cargo xtask` of the checkout being pushed, or
/// of the workspace recorded under [`WORKSPACE_KEY`] (cargo rebuilds it when
/// its sources changed: a binary built before a pull may fingerprint by
/// other rules), and names no path of this machine, so that it can live in
/// a committed `core.hooksPath` folder.
pub fn script() -> String {
    format!(
        "#!/bin/sh\n{MARKER} (`cargo xtask mzbuild hook install`; remove with `hook uninstall`).\n\
         # Lints and diffs the pushed commits, never the work tree; prints what CI will rebuild.\n\
         # Runs `cargo xtask` of this checkout, or of the workspace `hook install` recorded in\n\
         # this clone's git config ({WORKSPACE_KEY}) when this repository has no xtask of its own;\n\
         # cargo rebuilds it when its sources changed.\n\
         root=$(git rev-parse --show-toplevel) || exit 1\n\
         tool=$(git config --get {WORKSPACE_KEY}) || tool=$root\n\
         cd \"$tool\" && exec cargo xtask mzbuild --root \"$root\" hook pre-push \"$@\"\n"
    )
}

/// Install the hook in the repository at `root`. `tool` is the workspace
/// whose xtask this is: when it is not `root`, it is recorded in the
/// clone's git config for the hook to run.
pub fn install(root: &Path, force: bool, tool: &Path) -> Result<Status> {
    let path = hook_path(root)?;
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.contains(MARKER) && !force {
            bail!(
                "{} exists and is not mzbuild's: keep it, or pass --force to replace it (merge its checks by hand)",
                path.display()
            );
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let git = GitRepo::open(root);
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(root, tool) {
        unset_workspace(&git);
    } else {
        let tool = std::fs::canonicalize(tool).unwrap_or_else(|_| tool.to_path_buf());
        let tool = tool.to_str().with_context(|| format!("{} is not UTF-8", tool.display()))?;
        git.run(&["config", WORKSPACE_KEY, tool]).context("recording the xtask workspace in the git config")?;
        ui::progress(format_args!("the hook runs `cargo xtask` of {tool} (git config {WORKSPACE_KEY})"));
    }
    std::fs::write(&path, script()).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    ui::progress(format_args!("installed {}", path.display()));
    Ok(Status::Success)
}

/// Remove [`WORKSPACE_KEY`] from the clone's git config (absent: nothing to do).
fn unset_workspace(git: &GitRepo) {
    if git.run(&["config", "--get", WORKSPACE_KEY]).is_ok() {
        let _ = git.run(&["config", "--unset", WORKSPACE_KEY]);
    }
}

pub fn uninstall(root: &Path) -> Result<Status> {
    let path = hook_path(root)?;
    match std::fs::read_to_string(&path) {
        Err(_) => ui::progress(format_args!("no pre-push hook at {}", path.display())),
        Ok(text) if !text.contains(MARKER) => {
            bail!("{} is not mzbuild's pre-push hook: left alone (remove it yourself if you mean to)", path.display())
        }
        Ok(_) => {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            unset_workspace(&GitRepo::open(root));
            ui::progress(format_args!("removed {}", path.display()));
        }
    }
    Ok(Status::Success)
}

/// One line of git's pre-push input.
#[derive(Debug, PartialEq, Eq)]
pub struct Push {
    pub local_ref: String,
    pub local_sha: String,
    pub remote_ref: String,
    pub remote_sha: String,
}

/// Parse git's pre-push input; deletions (a zero local sha) are left out.
pub fn parse_pushes(input: &str) -> Vec<Push> {
    input
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let push = Push {
                local_ref: p.next()?.into(),
                local_sha: p.next()?.into(),
                remote_ref: p.next()?.into(),
                remote_sha: p.next()?.into(),
            };
            (!is_zero(&push.local_sha)).then_some(push)
        })
        .collect()
}

fn is_zero(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// How long the hook gives each registry request when it asks whether the
/// new tags are published: a push must not wait on a slow network.
pub const HOOK_BUDGET: Duration = Duration::from_secs(3);

/// `hook pre-push REMOTE URL`: lint and diff each pushed commit. Exit 1
/// (the push is stopped) when lint finds problems.
pub fn pre_push(
    options: &Options,
    root: &Path,
    remote: Option<&str>,
    env: Box<dyn crate::env::Env>,
    default_root: PathBuf,
) -> Result<Status> {
    let mut input = String::new();
    for line in std::io::stdin().lock().lines() {
        input.push_str(&line.context("reading the pushed refs from stdin")?);
        input.push('\n');
    }
    let pushes = parse_pushes(&input);
    let git = GitRepo::open(root);
    let mut status = Status::Success;
    let mut env = Some(env);
    for push in &pushes {
        let short = short_sha(&git, &push.local_sha);
        ui::progress(format_args!("pre-push: {} ({short}) -> {}", push.local_ref, push.remote_ref));
        let findings = lint::lint(Tree::list_rev_with(root, &push.local_sha, !options.no_cache)?, options.strict)?;
        for n in &findings.notes {
            ui::note(n);
        }
        if !findings.problems.is_empty() {
            for f in &findings.problems {
                ui::error(f);
            }
            ui::error(format_args!(
                "lint: {} problem(s) in {short}: the push is stopped; fix them, or push with --no-verify",
                findings.problems.len()
            ));
            status = Status::Failure;
            continue;
        }
        // What the remote has; else where the branch left its upstream; else
        // (a new branch) where it left the remote's default branch.
        let (base, base_label) = if !is_zero(&push.remote_sha) && git.resolve_commit(&push.remote_sha).is_ok() {
            (push.remote_sha.clone(), format!("the remote ({})", short_sha(&git, &push.remote_sha)))
        } else {
            let branch = push.local_ref.strip_prefix("refs/heads/").unwrap_or("");
            match default_base(&git, &push.local_sha, branch, remote) {
                Ok(b) => {
                    if !b.upstream {
                        ui::progress(format_args!("pre-push: a new branch: comparing with {}", b.label));
                    }
                    (b.commit, b.label)
                }
                Err(e) => {
                    ui::progress(format_args!("pre-push: lint only: {e:#}"));
                    continue;
                }
            }
        };
        let opts = Options { rev: Some(push.local_sha.clone()), ..options.clone() };
        let ctx =
            Ctx::load(&opts, default_root.clone(), env.take().unwrap_or_else(|| Box::new(crate::env::ProcessEnv)))?;
        let diffs = diff_images(&ctx, &base, Some(HOOK_BUDGET))?;
        let text = render_diff(&diffs, ctx.repo.images.len(), &base_label, &format!("the pushed {short}"));
        for line in text.lines() {
            ui::line(format_args!("  {line}"));
        }
        let rebuild: Vec<&str> =
            diffs.iter().filter(|d| d.new.is_some() && d.published != Some(true)).map(|d| d.name.as_str()).collect();
        let unknown = diffs.iter().any(|d| d.offline);
        match (rebuild.len(), unknown) {
            (0, _) => ui::progress("pre-push: CI will rebuild no image"),
            (n, false) => ui::progress(format_args!("pre-push: CI will rebuild {n}: {}", rebuild.join(", "))),
            (n, true) => ui::progress(format_args!(
                "pre-push: CI will rebuild at most {n}: {} (offline: not checked which are published)",
                rebuild.join(", ")
            )),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_and_script() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let input = format!("refs/heads/x {a} refs/heads/x {z}\n(delete) {z} refs/heads/old {a}\n\n");
        let p = parse_pushes(&input);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].local_sha.as_str(), p[0].remote_sha.as_str()), (a.as_str(), z.as_str()));
        expect_test::expect![[r##"
            #!/bin/sh
            # mzbuild pre-push hook (`cargo xtask mzbuild hook install`; remove with `hook uninstall`).
            # Lints and diffs the pushed commits, never the work tree; prints what CI will rebuild.
            # Runs `cargo xtask` of this checkout, or of the workspace `hook install` recorded in
            # this clone's git config (mzbuild.workspace) when this repository has no xtask of its own;
            # cargo rebuilds it when its sources changed.
            root=$(git rev-parse --show-toplevel) || exit 1
            tool=$(git config --get mzbuild.workspace) || tool=$root
            cd "$tool" && exec cargo xtask mzbuild --root "$root" hook pre-push "$@"
        "##]]
        .assert_eq(&script());
    }
}
