//! What `ensure --dry-run` and `build --dry-run` print: the plan as a table
//! (what each image would have done to it, and in which wave of builds),
//! then the pre-images the builds would run. Pure: the commands gather the
//! facts (registry checks, local images) and print the text.
//!
//! The actions are named after the statuses the real run reports (`copy`
//! becomes `copied`, `push` becomes `pushed`, `build` becomes `built`), so
//! a plan reads against the run that follows it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{drifted, Action, Facts, Step};
use crate::config::image::PreImage;
use crate::config::settings::Settings;
use crate::plan::naming::Naming;
use crate::preimage::cargo_build::cargo_args;

/// The wave of each step that builds: 1 for those whose dependencies are
/// all available, else one more than the latest wave among the
/// dependencies it waits for. `steps` are in dependency order. (The pool
/// starts an image as soon as its own dependencies are built; a wave is
/// the earliest it can start.)
pub fn waves(steps: &[Step<'_>]) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.action.builds()) {
        let after = s.image.depends_on.iter().filter_map(|d| out.get(d)).max().copied().unwrap_or(0);
        out.insert(s.image.name.clone(), after + 1);
    }
    out
}

/// What the plan does to one image, and where: the action's word and
/// details.
fn describe(step: &Step<'_>, naming: &Naming, facts: &Facts) -> (&'static str, String) {
    let urls = |rs: &[usize]| rs.iter().map(|r| naming.registries[*r].url.as_str()).collect::<Vec<_>>().join(", ");
    match &step.action {
        Action::Published => match facts.published.get(&step.image.name).map(|h| (drifted(h), h)) {
            Some((d, held)) if !d.is_empty() => (
                "drifted",
                format!(
                    "the tag names other content in {} than in {}: `repair` re-points it",
                    urls(&d),
                    super::source(held).map_or("?", |r| naming.registries[r].url.as_str())
                ),
            ),
            _ => ("published", "already in every registry".into()),
        },
        Action::Present => ("present", format!("already in the local engine ({})", step.spec)),
        Action::Unpublished => ("unpublished", "in no registry".into()),
        Action::Copy { from, to } => ("copy", format!("from {} to {}", naming.registries[*from].url, urls(to))),
        Action::Push { registries } => ("push", format!("build, push to {}", urls(registries))),
        Action::Load => ("build", format!("build into the local engine as {}", step.spec)),
        Action::PullOrBuild => ("pull", format!("pull {}, else build it", step.spec)),
    }
}

/// The plan as text: a table of every step, then the pre-images of the
/// steps that build (each image's, then the one `cargo build` they share).
pub fn render(steps: &[Step<'_>], naming: &Naming, facts: &Facts, settings: &Settings, has_optimized: bool) -> String {
    let waves = waves(steps);
    let mut rows = vec![["image".to_string(), "action".into(), "wave".into(), "detail".into()]];
    for s in steps {
        let (action, detail) = describe(s, naming, facts);
        let wave = waves.get(&s.image.name).map_or("-".to_string(), usize::to_string);
        rows.push([s.image.name.clone(), action.into(), wave, detail]);
    }
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    for r in &rows {
        let _ = writeln!(out, "{:<w0$}  {:<w1$}  {:>w2$}  {}", r[0], r[1], r[2], r[3]);
    }
    let building: Vec<&Step> = steps.iter().filter(|s| s.action.builds()).collect();
    let mut cargo = vec![];
    let mut pre = String::new();
    for s in &building {
        for p in &s.image.config.pre_images {
            match p {
                PreImage::Copy(c) => {
                    let source = if c.source.is_empty() { "." } else { &c.source };
                    let _ = writeln!(
                        pre,
                        "  {}: copy {source} ({}) to {}/{}",
                        s.image.name, c.matching, s.image.dir, c.destination
                    );
                }
                PreImage::CargoBuild(cb) => {
                    let what: Vec<String> = cb
                        .bins
                        .iter()
                        .map(|b| format!("bin {b}"))
                        .chain(cb.examples.iter().map(|e| format!("example {e}")))
                        .collect();
                    let _ = writeln!(pre, "  {}: cargo-build {}", s.image.name, what.join(", "));
                    cargo.push(cb);
                }
            }
        }
    }
    if !pre.is_empty() {
        let _ = writeln!(
            out,
            "\npre-images, before the builds (each image's directory first cleaned of what git does not see):"
        );
        out.push_str(&pre);
        if !cargo.is_empty() {
            let _ = writeln!(out, "  cargo {}", cargo_args(&cargo, settings, has_optimized).join(" "));
        }
    }
    out
}

/// The one-line sum of a plan: `1 to copy, 3 to build in 2 waves`.
pub fn summary(steps: &[Step<'_>]) -> String {
    let copies = steps.iter().filter(|s| matches!(s.action, Action::Copy { .. })).count();
    let builds = steps.iter().filter(|s| s.action.builds()).count();
    let waves = waves(steps).into_values().max().unwrap_or(0);
    let mut parts = vec![];
    if copies > 0 {
        parts.push(format!("{copies} to copy"));
    }
    parts.push(if builds == 0 {
        "nothing to build".to_string()
    } else {
        format!("{builds} to build in {}", crate::ui::count(waves, "wave", "waves"))
    });
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::image::{CargoBuildSpec, CopySpec};
    use crate::config::settings::{Arch, Profile};
    use crate::config::workspace::Registry;
    use crate::discover::Image;
    use crate::fingerprint::{Fingerprint, Fingerprinted};
    use crate::plan::tests::image_with as image;
    use crate::plan::{plan, Goal};

    #[test]
    fn the_plan_shows_actions_waves_and_pre_images() {
        let cargo = PreImage::CargoBuild(CargoBuildSpec { bins: vec!["app".into()], ..Default::default() });
        let copy = PreImage::Copy(CopySpec { source: "docs".into(), destination: "www".into(), matching: "*".into() });
        // base <- app, docs <- top; local on base; old is published alone.
        let images = [
            image("base", true, &[], vec![]),
            image("old", true, &[], vec![]),
            image("app", true, &["base"], vec![cargo]),
            image("docs", true, &["base"], vec![copy]),
            image("local", false, &["base"], vec![]),
            image("top", true, &["app", "docs"], vec![]),
        ];
        let refs: Vec<&Image> = images.iter().collect();
        let fps: BTreeMap<String, Fingerprinted> = images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.name.clone(), Fingerprinted { fingerprint: Fingerprint([i as u8; 20]) }))
            .collect();
        let naming = Naming {
            spec_registry: "r0/p".into(),
            prefix: String::new(),
            registries: vec![Registry::anonymous("r0/p"), Registry::anonymous("r1/q")],
        };
        let d = |s: &str| Some(format!("sha256:{s}"));
        let facts = Facts {
            published: [("base".to_string(), vec![d("x"), d("x")]), ("old".to_string(), vec![None, d("y")])].into(),
            local: BTreeSet::new(),
        };
        let steps = plan(&refs, &fps, &naming, &Goal::Ensure, &facts);
        let settings =
            Settings { profile: Profile::Optimized, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        expect_test::expect![[r#"
            image  action     wave  detail
            base   published     -  already in every registry
            old    copy          -  from r1/q to r0/p
            app    push          1  build, push to r0/p, r1/q
            docs   push          1  build, push to r0/p, r1/q
            local  build         1  build into the local engine as r0/p/local:mzbuild-AQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAE
            top    push          2  build, push to r0/p, r1/q

            pre-images, before the builds (each image's directory first cleaned of what git does not see):
              app: cargo-build bin app
              docs: copy docs (*) to img/docs/www
              cargo build --locked --target x86_64-unknown-linux-gnu --profile optimized --bin app --message-format=json-render-diagnostics
        "#]]
        .assert_eq(&render(&steps, &naming, &facts, &settings, true));
        assert_eq!(summary(&steps), "1 to copy, 4 to build in 2 waves");

        // Drift shows as the real run reports it.
        let facts = Facts { published: [("base".to_string(), vec![d("x"), d("z")])].into(), local: BTreeSet::new() };
        let steps = plan(&refs[..1], &fps, &naming, &Goal::Ensure, &facts);
        expect_test::expect![[r#"
            image  action   wave  detail
            base   drifted     -  the tag names other content in r1/q than in r0/p: `repair` re-points it
        "#]]
        .assert_eq(&render(&steps, &naming, &facts, &settings, true));
        assert_eq!(summary(&steps), "nothing to build");
    }
}
