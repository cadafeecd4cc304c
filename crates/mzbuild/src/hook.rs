//! The pre-push hook: `hook install` writes `.git/hooks/pre-push` (where
//! git looks for it, `core.hooksPath` included), `hook uninstall` removes
//! it, and `hook pre-push` is what it runs: for every pushed commit (git's
//! `local_ref local_sha remote_ref remote_sha` lines on stdin) it lints the
//! commit and diffs it against what the remote has, reading both from git's
//! object store. It never stashes, checks out or touches the work tree.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::changes::{diff_images, render_diff};
use crate::discover::git::GitRepo;
use crate::discover::tree::Tree;
use crate::{lint, ui, Ctx, Options, Status};

/// The line that marks a hook as ours.
const MARKER: &str = "# mzbuild pre-push hook";

/// Where git looks for the pre-push hook.
pub fn hook_path(root: &Path) -> Result<PathBuf> {
    let git = GitRepo::open(root);
    let out = git.run(&["rev-parse", "--git-path", "hooks/pre-push"])?;
    Ok(root.join(String::from_utf8_lossy(&out).trim()))
}

/// The hook script: run this binary (else `cargo xtask`) on this work tree.
pub fn script(exe: &Path, root: &Path) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let exe = q(&exe.display().to_string());
    let root = q(&root.display().to_string());
    format!(
        "#!/bin/sh\n{MARKER} (`cargo xtask mzbuild hook install`; remove with `hook uninstall`).\n\
         # Lints and diffs the pushed commits, never the work tree; prints what CI will rebuild.\n\
         if [ -x {exe} ]; then\n  exec {exe} mzbuild --root {root} hook pre-push \"$@\"\nfi\n\
         cd {root} && exec cargo xtask mzbuild hook pre-push \"$@\"\n"
    )
}

pub fn install(root: &Path, exe: &Path, force: bool) -> Result<Status> {
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
    std::fs::write(&path, script(exe, root)).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    ui::progress(format_args!("installed {}", path.display()));
    Ok(Status::Success)
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

/// `hook pre-push`: lint and diff each pushed commit. Exit 1 (the push is
/// stopped) when lint finds problems.
pub fn pre_push(options: &Options, root: &Path, env: Box<dyn crate::Env>, default_root: PathBuf) -> Result<Status> {
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
        let short = &push.local_sha[..push.local_sha.len().min(12)];
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
        // What the remote has, else where the branch left its upstream.
        let base = if !is_zero(&push.remote_sha) && git.resolve_commit(&push.remote_sha).is_ok() {
            Some(push.remote_sha.clone())
        } else {
            git.run(&["merge-base", &push.local_sha, "@{upstream}"])
                .ok()
                .map(|o| String::from_utf8_lossy(&o).trim().to_string())
        };
        let Some(base) = base else {
            ui::progress("pre-push: nothing to compare with (a new branch without an upstream): lint only");
            continue;
        };
        let opts = Options { rev: Some(push.local_sha.clone()), ..options.clone() };
        let ctx = Ctx::load(&opts, default_root.clone(), env.take().unwrap_or_else(|| Box::new(crate::ProcessEnv)))?;
        let diffs = diff_images(&ctx, &base, true)?;
        let base_short = &base[..base.len().min(12)];
        let text = render_diff(
            &diffs,
            ctx.repo.images.len(),
            &format!("the remote ({base_short})"),
            &format!("the pushed {short}"),
        );
        for line in text.lines() {
            ui::line(format_args!("  {line}"));
        }
        let rebuild: Vec<&str> =
            diffs.iter().filter(|d| d.new.is_some() && d.published != Some(true)).map(|d| d.name.as_str()).collect();
        if rebuild.is_empty() {
            ui::progress("pre-push: CI will rebuild no image");
        } else {
            ui::progress(format_args!("pre-push: CI will rebuild {}: {}", rebuild.len(), rebuild.join(", ")));
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
        let s = script(Path::new("/x/it's/xtask"), Path::new("/repo"));
        expect_test::expect![[r#"
            #!/bin/sh
            # mzbuild pre-push hook (`cargo xtask mzbuild hook install`; remove with `hook uninstall`).
            # Lints and diffs the pushed commits, never the work tree; prints what CI will rebuild.
            if [ -x '/x/it'\''s/xtask' ]; then
              exec '/x/it'\''s/xtask' mzbuild --root '/repo' hook pre-push "$@"
            fi
            cd '/repo' && exec cargo xtask mzbuild hook pre-push "$@"
        "#]]
        .assert_eq(&s);
    }
}
