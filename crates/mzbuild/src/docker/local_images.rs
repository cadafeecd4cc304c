//! The local engine's `mzbuild-*` images for `gc --local`: which there
//! are (reference and image ID), which image IDs containers use (running
//! or stopped), and removing one tag.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::{last_line, Docker};

impl Docker {
    /// Every local image tagged `mzbuild-*`: `(repo:tag, image ID)`.
    pub fn mzbuild_images(&self) -> Result<Vec<(String, String)>> {
        let out = self
            .command(&["image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .output()
            .context("listing local images")?;
        if !out.status.success() {
            bail!("`docker image ls` failed: {}", last_line(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(r, _)| r.rsplit_once(':').is_some_and(|(_, tag)| tag.starts_with("mzbuild-")))
            .map(|(r, id)| (r.to_string(), id.trim().to_string()))
            .collect())
    }

    /// The image IDs of every container, running or stopped.
    pub fn container_image_ids(&self) -> Result<BTreeSet<String>> {
        let out = self.command(&["ps", "--all", "--quiet", "--no-trunc"]).output().context("listing containers")?;
        if !out.status.success() {
            bail!("`docker ps` failed: {}", last_line(&out.stderr));
        }
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let mut args = vec!["container", "inspect", "--format", "{{.Image}}"];
        args.extend(ids.iter().map(String::as_str));
        let out = self.command(&args).output().context("inspecting containers")?;
        // A container removed since the listing makes inspect fail for it
        // alone: the others' lines are still there.
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).collect())
    }

    /// `docker rmi REF` (without force: the engine refuses to remove an
    /// image a container uses).
    pub fn remove_image(&self, reference: &str) -> Result<()> {
        let out = self.command(&["rmi", reference]).output().context("running docker rmi")?;
        if !out.status.success() {
            bail!("`docker rmi {reference}` failed: {}", last_line(&out.stderr));
        }
        Ok(())
    }
}
