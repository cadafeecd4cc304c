//! The planner: from what is known (fingerprints, what each registry has,
//! what the local engine has) to what to do for each image. Pure: no I/O,
//! no Docker; `build`, `acquire` and `ensure` all plan here, and the tests
//! below pin every decision.

use std::collections::{BTreeMap, BTreeSet};

use crate::discover::Image;
use crate::fingerprint::{Fingerprint, Fingerprinted};
use crate::publish::targets::Naming;

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
}

/// What is known about the world.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// For each publishable image, the registries (indices into
    /// `Naming::registries`) that lack its tag. Only `Ensure` needs it.
    pub missing: BTreeMap<String, Vec<usize>>,
    /// Image references present in the local engine (`repo:tag`).
    pub local: BTreeSet<String>,
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
            Action::Push { registries } => registries
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
    images
        .iter()
        .map(|image| {
            let fingerprint = fps[&image.name].fingerprint;
            let spec = naming.spec(&image.name, &fingerprint);
            let local = facts.local.contains(&spec);
            let action = match goal {
                Goal::Build { force } if force.contains(&image.name) => Action::Load,
                Goal::Build { .. } if local => Action::Present,
                Goal::Build { .. } => Action::Load,
                Goal::Acquire if local => Action::Present,
                Goal::Acquire if image.config.publish => Action::PullOrBuild,
                Goal::Acquire => Action::Load,
                Goal::Ensure if image.config.publish => match facts.missing.get(&image.name) {
                    Some(regs) if !regs.is_empty() => Action::Push { registries: regs.clone() },
                    _ => Action::Published,
                },
                Goal::Ensure if local => Action::Present,
                Goal::Ensure => Action::Load,
            };
            Step { image, fingerprint, spec, action }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::image::ImageConfig;
    use crate::config::workspace::Registry;

    fn image(name: &str, publish: bool) -> Image {
        Image {
            name: name.into(),
            dir: format!("img/{name}"),
            config: ImageConfig {
                name: name.into(),
                publish,
                description: None,
                mainline: true,
                pre_images: vec![],
                build_args: vec![],
            },
            dockerfile: vec![],
            depends_on: vec![],
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
        let images = [image("a", true), image("b", true), image("local", false)];
        let refs: Vec<&Image> = images.iter().collect();
        let fps: BTreeMap<String, Fingerprinted> = images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.name.clone(), Fingerprinted { fingerprint: Fingerprint([i as u8; 20]), inputs: vec![] }))
            .collect();
        let n = naming();
        plan(&refs, &fps, &n, &goal, facts)
            .iter()
            .map(|s| {
                let tags = if s.action.builds() { format!(" {}", s.tags(&n).join(" ")) } else { String::new() };
                format!("{}: {:?}{tags}\n", s.image.name, s.action)
            })
            .collect()
    }

    #[test]
    fn ensure_pushes_exactly_what_registries_lack() {
        let facts = Facts {
            missing: [("b".to_string(), vec![1])].into(),
            local: [naming().spec("local", &Fingerprint([2; 20]))].into(),
        };
        expect_test::expect![[r#"
            a: Published
            b: Push { registries: [1] } r1/q/b:mzbuild-AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB
            local: Present
        "#]]
        .assert_eq(&show(Goal::Ensure, &facts));
        let facts = Facts { missing: [("a".to_string(), vec![0, 1])].into(), local: BTreeSet::new() };
        expect_test::expect![[r#"
            a: Push { registries: [0, 1] } r0/p/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA r1/q/a:mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
            b: Published
            local: Load r0/p/local:mzbuild-AIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC
        "#]]
        .assert_eq(&show(Goal::Ensure, &facts));
    }

    #[test]
    fn build_and_acquire_keep_what_is_local() {
        let facts = Facts { missing: BTreeMap::new(), local: [naming().spec("a", &Fingerprint([0; 20]))].into() };
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
}
