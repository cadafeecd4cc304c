//! `sign` (sign what is already published: after reviewing a tag that the
//! trust policy refused, or to sign images published before signing was
//! configured) and `attestation` (print the verified provenance of a
//! published image).

use anyhow::{bail, Result};

use crate::ctx::{Ctx, Status};
use crate::fingerprint::fingerprint_all;
use crate::publish::{clients, held_by, Access};
use crate::trust::Signer;
use crate::ui;

/// `sign IMAGE...`: sign the current tag of each image in every registry
/// that holds it, with the configured signing key. Only the named images
/// (not their dependencies): each is a decision someone made.
pub fn sign(ctx: &Ctx, images: &[String]) -> Result<Status> {
    let Some(signer) = Signer::load(ctx)? else {
        bail!(
            "sign: no signing key is configured: add `signing = {{ key-env = \"VAR\", password-env = \"VAR\" }}` to \
             Cargo.toml [workspace.metadata.mzbuild], and put the cosign private key in $VAR"
        );
    };
    for name in images {
        let image = ctx.repo.image(name)?;
        if !image.config.publish {
            bail!("sign: image `{name}` is not published (`publish: false`): there is nothing to sign");
        }
    }
    let closure = ctx.repo.resolve(images)?;
    let fps = fingerprint_all(&ctx.repo, &closure, &ctx.settings)?;
    let clients = clients(ctx, Access::Write, None)?;
    let tags: Vec<(&str, String)> = images.iter().map(|n| (n.as_str(), fps[n].fingerprint.tag())).collect();
    let held = held_by(ctx, &clients, &tags)?;
    let mut ok = true;
    for (name, tag) in &tags {
        let h = &held[*name];
        if h.iter().all(Option::is_none) {
            ui::error(format_args!("{name}: {tag} is in no registry: nothing to sign (publish it with `ensure`)"));
            ok = false;
            continue;
        }
        for (r, digest) in h.iter().enumerate() {
            let client = &clients[r];
            let Some(digest) = digest else {
                ui::progress(format_args!("{name}: not in registry {}", client.registry.url));
                continue;
            };
            let repository = client.registry.repository(&ctx.naming.prefix, name);
            match signer.sign(client, &repository, digest) {
                Ok(true) => ui::progress(format_args!(
                    "{name}: signed {}/{repository}:{tag} ({digest}) with key {}",
                    client.registry.host(),
                    signer.key.public().id()
                )),
                Ok(false) => ui::progress(format_args!(
                    "{name}: {}/{repository}:{tag} is signed by key {} already",
                    client.registry.host(),
                    signer.key.public().id()
                )),
                Err(e) => {
                    ui::error(format_args!("{name}: {e:#}"));
                    ok = false;
                }
            }
        }
    }
    Ok(if ok { Status::Success } else { Status::Failure })
}

/// `attestation IMAGE`: the provenance of the image's current tag, from
/// the first registry that holds it, once its signature checks out under
/// the trust policy; pretty JSON on stdout.
pub fn attestation(ctx: &Ctx, name: &str) -> Result<Status> {
    let Some(policy) = &ctx.trust else {
        bail!(
            "attestation: no trust policy to check the provenance with: add `trust = {{ keys = [\"ci/mzbuild.pub\"] }}` \
             to Cargo.toml [workspace.metadata.mzbuild], or give --trust-key PATH"
        );
    };
    let closure = ctx.repo.resolve(&[name.to_string()])?;
    let fps = fingerprint_all(&ctx.repo, &closure, &ctx.settings)?;
    let clients = clients(ctx, Access::Read, None)?;
    let tag = fps[name].fingerprint.tag();
    let held = held_by(ctx, &clients, &[(name, tag.clone())])?;
    let h = &held[name];
    let Some((r, digest)) = h.iter().enumerate().find_map(|(r, d)| d.as_ref().map(|d| (r, d))) else {
        bail!("attestation: {name}: {tag} is in no registry");
    };
    let client = &clients[r];
    let repository = client.registry.repository(&ctx.naming.prefix, name);
    if let Err(reason) = crate::trust::verify(client, &repository, digest, policy)? {
        bail!("attestation: {name}: {}/{repository}:{tag} ({digest}) is untrusted: {reason}", client.registry.host());
    }
    let statement = crate::trust::verified_statement(client, &repository, digest, policy)?;
    ui::result(&format!("{}\n", serde_json::to_string_pretty(&statement)?));
    Ok(Status::Success)
}
