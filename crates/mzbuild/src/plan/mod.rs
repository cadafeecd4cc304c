//! The planner: from what is known (fingerprints, what each registry holds
//! under each tag, what the local engine has) to what to do for each image.
//! Pure: no I/O, no Docker; `build`, `acquire`, `ensure` and `repair` all
//! plan here, and the tests below pin every decision.
//!
//! A content-addressed tag must name one content everywhere: an image that
//! some registry has is copied (registry to registry, same bytes) to the
//! ones that lack it, and built only when no registry has it; a tag that
//! exists is never overwritten, except by `repair`, which points drifted
//! tags (same tag, different digests) back at the reference registry's
//! content.

pub mod naming;

use std::collections::{BTreeMap, BTreeSet};

use crate::discover::Image;
use crate::fingerprint::{Fingerprint, Fingerprinted};
use crate::plan::naming::Naming;

pub mod dry_run;

/// Which command is planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Have the images in the local engine, building what is missing; the
    /// `force`d ones are rebuilt even when present.
    Build { force: BTreeSet<String> },
    /// Have the images in the local engine, pulling what is published.
    Acquire,
    /// Have every publishable image in every registry, and the others in
    /// the local engine.
    Ensure,
    /// Make every registry hold the reference registry's content (see
    /// [`source`]) under each publishable image's tag, by copying; never
    /// builds.
    Repair,
}

/// What the registries hold under one tag: for each registry (by index
/// into `Naming::registries`), the digest of its manifest, or `None` when
/// it lacks the tag.
pub type Held = Vec<Option<String>>;

/// What is known about the world.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// For each publishable image, what the registries hold under its tag
    /// (an image without an entry is in no registry). `Ensure` and `Repair`
    /// need it.
    pub published: BTreeMap<String, Held>,
    /// Image references present in the local engine (`repo:tag`).
    pub local: BTreeSet<String>,
}

/// The registry whose content is the reference for a tag: the spec
/// registry (index 0) when it has the tag, else the first that has it.
pub fn source(held: &[Option<String>]) -> Option<usize> {
    held.iter().position(Option::is_some)
}

/// The registries that lack the tag.
pub fn lacking(held: &[Option<String>], registries: usize) -> Vec<usize> {
    (0..registries).filter(|r| held.get(*r).is_none_or(Option::is_none)).collect()
}

/// The registries whose digest differs from the reference registry's
/// ([`source`]): the same tag naming different content.
pub fn drifted(held: &[Option<String>]) -> Vec<usize> {
    let Some(reference) = source(held).and_then(|r| held[r].as_ref()) else { return vec![] };
    held.iter().enumerate().filter(|(_, d)| d.as_ref().is_some_and(|d| d != reference)).map(|(r, _)| r).collect()
}

/// What to do for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: every registry has it.
    Published,
    /// Nothing: the local engine has it.
    Present,
    /// Pull it from the spec registry; if that fails, build it locally.
    PullOrBuild,
    /// Build it into the local engine.
    Load,
    /// Build it and push it, in one step, to these registries.
    Push { registries: Vec<usize> },
    /// Copy it through the registry API from registry `from`, which has it,
    /// to registries `to` (no build: the same bytes, the same digest).
    Copy { from: usize, to: Vec<usize> },
    /// Nothing (`repair`): no registry has it; `ensure` builds it.
    Unpublished,
}

impl Action {
    /// Whether the image may need a build.
    pub fn builds(&self) -> bool {
        matches!(self, Action::PullOrBuild | Action::Load | Action::Push { .. })
    }
}

/// One image's step.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    pub image: &'a Image,
    pub fingerprint: Fingerprint,
    /// Its spec (FROM rewriting, local tag, pulls).
    pub spec: String,
    pub action: Action,
}

impl Step<'_> {
    /// The tags a build of this step produces.
    pub fn tags(&self, naming: &Naming) -> Vec<String> {
        match &self.action {
            Action::Push { registries } | Action::Copy { to: registries, .. } => registries
                .iter()
                .map(|r| naming.registries[*r].reference(&naming.prefix, &self.image.name, &self.fingerprint.tag()))
                .collect(),
            _ => vec![self.spec.clone()],
        }
    }
}

/// Plan `images` (in dependency order, as `Repo::resolve` returns them).
pub fn plan<'a>(
    images: &[&'a Image],
    fps: &BTreeMap<String, Fingerprinted>,
    naming: &Naming,
    goal: &Goal,
    facts: &Facts,
) -> Vec<Step<'a>> {
    let n = naming.registries.len();
    images
        .iter()
        .map(|image| {
            let fingerprint = fps[&image.name].fingerprint;
            let spec = naming.spec(&image.name, &fingerprint);
            let local = facts.local.contains(&spec);
            let held = facts.published.get(&image.name).map(Vec::as_slice).unwrap_or_default();
            let lack = lacking(held, n);
            let action = match goal {
                Goal::Build { force } if force.contains(&image.name) => Action::Load,
                Goal::Build { .. } if local => Action::Present,
                Goal::Build { .. } => Action::Load,
                Goal::Acquire if local => Action::Present,
                Goal::Acquire if image.config.publish => Action::PullOrBuild,
                Goal::Acquire => Action::Load,
                Goal::Ensure if image.config.publish => match source(held) {
                    _ if lack.is_empty() => Action::Published,
                    Some(from) => Action::Copy { from, to: lack },
                    None => Action::Push { registries: lack },
                },
                Goal::Ensure if local => Action::Present,
                Goal::Ensure => Action::Load,
                Goal::Repair => match source(held) {
                    None => Action::Unpublished,
                    Some(from) => {
                        let mut to = lack;
                        to.extend(drifted(held));
                        to.sort_unstable();
                        if to.is_empty() {
                            Action::Published
                        } else {
                            Action::Copy { from, to }
                        }
                    }
                },
            };
            Step { image, fingerprint, spec, action }
        })
        .collect()
}

/// The images a release tag starts from: the named `targets`, or, when
/// none are named, every published image, without the `mainline: false`
/// ones when `mainline_only` (the original leaves them out of tag builds).
/// Their dependencies are added by the caller, whatever their `mainline`,
/// as the original does. A named image that is not published is an error:
/// it is in no registry.
pub fn release_roots(
    images: &BTreeMap<String, Image>,
    targets: &[String],
    mainline_only: bool,
) -> Result<Vec<String>, String> {
    if targets.is_empty() {
        return Ok(images
            .values()
            .filter(|i| i.config.publish && (i.config.mainline || !mainline_only))
            .map(|i| i.name.clone())
            .collect());
    }
    let unpublished: Vec<&str> =
        targets.iter().filter(|t| images.get(*t).is_some_and(|i| !i.config.publish)).map(String::as_str).collect();
    if !unpublished.is_empty() {
        let list = unpublished.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let (is, it) = if unpublished.len() == 1 { ("is", "it") } else { ("are", "them") };
        return Err(format!(
            "{list} {is} not published (publish: false), so in no registry: a release tag cannot point at {it}"
        ));
    }
    Ok(targets.to_vec())
}

/// What a release tag does in one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagMove {
    /// The registry has no such tag: put the index there.
    Create,
    /// The tag already names this very index: nothing to do.
    Unchanged,
    /// The tag names other content (an earlier release, another build): move
    /// it to the index.
    Move { from: String },
}

impl TagMove {
    /// Whether the tag is written.
    pub fn writes(&self) -> bool {
        !matches!(self, TagMove::Unchanged)
    }
}

/// One image's release tag: the digest of the index it is to name, and
/// what happens to the tag in each registry (by index), given the digest
/// each holds under it now.
pub fn release_moves(index_digest: &str, current: &[Option<String>]) -> Vec<TagMove> {
    current
        .iter()
        .map(|c| match c {
            None => TagMove::Create,
            Some(d) if d == index_digest => TagMove::Unchanged,
            Some(d) => TagMove::Move { from: d.clone() },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::image::ImageConfig;
    use crate::config::workspace::Registry;

    fn image(name: &str, publish: bool) -> Image {
        image_with(name, publish, &[], vec![])
    }

    /// An image in `img/<name>` with these dependencies and pre-images (also
    /// for the dry run's tests).
    pub(crate) fn image_with(
        name: &str,
        publish: bool,
        deps: &[&str],
        pre_images: Vec<crate::config::image::PreImage>,
    ) -> Image {
        Image {
            name: name.into(),
            dir: format!("img/{name}"),
            config: ImageConfig {
                name: name.into(),
                publish,
                description: None,
                mainline: true,
                pre_images,
                build_args: vec![],
            },
            dockerfile: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn naming() -> Naming {
        Naming {
            spec_registry: "r0/p".into(),
            prefix: String::new(),
            registries: vec![Registry::anonymous("r0/p"), Registry::anonymous("r1/q")],
        }
    }

    /// The plan, one line per image: `name: action [tags]`.
    fn show(goal: Goal, facts: &Facts) -> String {
        show_with(goal, facts, naming())
    }

    /// `show`, with a third registry `r2/s`; no tags.
    fn show3(goal: Goal, facts: &Facts) -> String {
        let mut n = naming();
        n.registries.push(Registry::anonymous("r2/s"));
        show_with(goal, facts, n).lines().map(|l| format!("{}\n", l.split(" r").next().unwrap())).collect()
    }

    fn show_with(goal: Goal, facts: &Facts, n: Naming) -> String {
        let images = [image("a", true), image("b", true), image("local", false)];
        let refs: Vec<&Image> = images.iter().collect();
        let fps: BTreeMap<String, Fingerprinted> = images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.name.clone(), Fingerprinted { fingerprint: Fingerprint([i as u8; 20]) }))
            .collect();
        plan(&refs, &fps, &n, &goal, facts)
            .iter()
            .map(|s| {
                let shows_tags = s.action.builds() || matches!(s.action, Action::Copy { .. });
                let tags = if shows_tags { format!(" {}", s.tags(&n).join(" ")) } else { String::new() };
                format!("{}: {:?}{tags}\n", s.image.name, s.action)
            })
            .collect()
    }

    /// What the registries hold: `held("a", &["x", ""])` = registry 0 has
    /// digest `sha256:x`, registry 1 lacks the tag.
    fn held(name: &str, digests: &[&str]) -> (String, Held) {
        let held = digests.iter().map(|d| (!d.is_empty()).then(|| format!("sha256:{d}"))).collect();
        (name.to_string(), held)
    }

    #[test]
    fn ensure_pushes_only_what_no_registry_has_and_copies_the_rest() {
        let facts = Facts {
            published: [held("a", &["x", "x"]), held("b", &["y", ""])].into(),
            local: [naming().spec("local", &Fingerprint([2; 20]))].into(),
        };
        expect_test::expect![[r#"
            a: Published
            b: Copy { from: 0, to: [1] } r1/q/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Present
        "#]]
        .assert_eq(&show(Goal::Ensure, &facts));
        // Nobody has `a` (no entry at all, or an entry of gaps): built once,
        // pushed to both. Only the second registry has `b`: copied from it.
        let facts = Facts { published: [held("b", &["", "y"])].into(), local: BTreeSet::new() };
        expect_test::expect![[r#"
            a: Push { registries: [0, 1] } r0/p/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA r1/q/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
            b: Copy { from: 1, to: [0] } r0/p/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Ensure, &facts));
        let facts = Facts { published: [held("a", &["", ""])].into(), local: BTreeSet::new() };
        assert!(show(Goal::Ensure, &facts).starts_with("a: Push { registries: [0, 1] }"));
    }

    #[test]
    fn ensure_never_overwrites_and_repair_repoints_drift() {
        // `a` drifted (same tag, two digests); `b` is the same everywhere.
        let facts =
            Facts { published: [held("a", &["x", "z"]), held("b", &["y", "y"])].into(), local: BTreeSet::new() };
        expect_test::expect![[r#"
            a: Published
            b: Published
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Ensure, &facts));
        expect_test::expect![[r#"
            a: Copy { from: 0, to: [1] } r1/q/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
            b: Published
            local: Unpublished
        "#]]
        .assert_eq(&show(Goal::Repair, &facts));
        // Without the tag in the spec registry, the first registry that has it
        // is the reference: repair fills the gap and re-points the drift.
        let three = |digests: &[&str]| Facts { published: [held("a", digests)].into(), local: BTreeSet::new() };
        let line = |facts: &Facts| show3(Goal::Repair, facts).lines().next().unwrap().to_string();
        assert_eq!(line(&three(&["", "x", "z"])), "a: Copy { from: 1, to: [0, 2] }");
        assert_eq!(line(&three(&["w", "x", ""])), "a: Copy { from: 0, to: [1, 2] }");
        assert_eq!(line(&three(&["", "", ""])), "a: Unpublished");
        assert_eq!(drifted(&three(&["w", "x", "w"]).published["a"]), [1]);
        assert_eq!(drifted(&three(&["", "x", "x"]).published["a"]), Vec::<usize>::new());
        assert_eq!(lacking(&three(&["", "x", ""]).published["a"], 3), [0, 2]);
        // A short entry lacks the registries it does not mention.
        assert_eq!(lacking(&[Some("sha256:x".into())], 3), [1, 2]);
    }

    #[test]
    fn build_and_acquire_keep_what_is_local() {
        let facts = Facts { published: BTreeMap::new(), local: [naming().spec("a", &Fingerprint([0; 20]))].into() };
        expect_test::expect![[r#"
            a: Present
            b: Load r0/p/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Build { force: BTreeSet::new() }, &facts));
        expect_test::expect![[r#"
            a: Load r0/p/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
            b: Load r0/p/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Build { force: ["a".to_string()].into() }, &facts));
        expect_test::expect![[r#"
            a: Present
            b: PullOrBuild r0/p/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Acquire, &facts));
    }

    #[test]
    fn release_tags_follow_mainline_like_the_original() {
        let mut tool = image("tool", true);
        tool.config.mainline = false;
        let images: BTreeMap<String, Image> =
            [image("a", true), image("local", false), tool].into_iter().map(|i| (i.name.clone(), i)).collect();
        // Main builds tag every published image; tag builds leave out `mainline: false`.
        assert_eq!(release_roots(&images, &[], false).unwrap(), ["a", "tool"]);
        assert_eq!(release_roots(&images, &[], true).unwrap(), ["a"]);
        // Named images are taken as named, but must be published.
        assert_eq!(release_roots(&images, &["tool".to_string()], true).unwrap(), ["tool"]);
        assert_eq!(
            release_roots(&images, &["local".to_string(), "a".to_string()], false).unwrap_err(),
            "`local` is not published (publish: false), so in no registry: a release tag cannot point at it"
        );
    }

    #[test]
    fn a_release_tag_moves_only_when_its_digest_differs() {
        let current = [None, Some("sha256:new".to_string()), Some("sha256:old".to_string())];
        expect_test::expect![[r#"
            [
                Create,
                Unchanged,
                Move {
                    from: "sha256:old",
                },
            ]
        "#]]
        .assert_debug_eq(&release_moves("sha256:new", &current));
        assert!(release_moves("sha256:new", &current).iter().filter(|m| m.writes()).count() == 2);
    }
}
