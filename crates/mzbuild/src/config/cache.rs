//! `[workspace.metadata.mzbuild] cache = { from = "auto", to = "auto" }`:
//! the layer cache that builds share through the registries (see
//! `docs/cache.md`). Like the rest of the table it is not hashed: the cache
//! changes how fast an image is built, never its fingerprint.

use anyhow::{anyhow, bail, Result};
use toml::Value;

/// Where builds import cached layers from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheFrom {
    /// The same image's published tags at the merge-base with the default
    /// branch and at the previous commit (the default).
    #[default]
    Auto,
    /// No import.
    None,
}

/// What builds export for later builds to import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheTo {
    /// A registry cache beside the image (`mzbuild-<fp>-cache`) when the
    /// builder can export one; nothing on buildx's `docker` driver, where
    /// the only export is inline metadata, which changes image digests
    /// (the default).
    #[default]
    Auto,
    /// The registry cache where the builder can export one, else (buildx's
    /// `docker` driver) the inline cache pushed beside the image as
    /// `mzbuild-<fp>-cache`, by a second, fully cached build: the image
    /// keeps its digest, and the cache chains from commit to commit.
    Beside,
    /// The registry cache beside the image; the build fails where the
    /// builder cannot export it.
    Registry,
    /// Inline cache metadata in the image's config (`--cache-to
    /// type=inline`): works on every driver, but the metadata holds the time
    /// each layer entered the builder's cache, so two agents building the
    /// same fingerprint push different digests.
    Inline,
    /// No export.
    None,
}

/// The `cache` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheConfig {
    pub from: CacheFrom,
    pub to: CacheTo,
}

const WHAT: &str = "Cargo.toml: [workspace.metadata.mzbuild] cache";

impl CacheConfig {
    /// Parse the key's value: `{ from = "auto" | "none", to = "auto" |
    /// "beside" | "registry" | "inline" | "none" }`, both optional.
    pub fn parse(v: Value) -> Result<CacheConfig> {
        let Value::Table(table) = v else {
            bail!("{WHAT} must be a table, e.g. {{ from = \"auto\", to = \"auto\" }}");
        };
        let mut config = CacheConfig::default();
        for (key, value) in table {
            let word = value.as_str().ok_or_else(|| anyhow!("{WHAT}.{key} must be a string, found {value}"))?;
            match key.as_str() {
                "from" => {
                    config.from = match word {
                        "auto" => CacheFrom::Auto,
                        "none" => CacheFrom::None,
                        _ => bail!("{WHAT}.from must be \"auto\" or \"none\", found \"{word}\""),
                    }
                }
                "to" => {
                    config.to = match word {
                        "auto" => CacheTo::Auto,
                        "registry" => CacheTo::Registry,
                        "beside" => CacheTo::Beside,
                        "inline" => CacheTo::Inline,
                        "none" => CacheTo::None,
                        _ => {
                            bail!("{WHAT}.to must be \"auto\", \"registry\", \"inline\" or \"none\", found \"{word}\"")
                        }
                    }
                }
                _ => bail!("{WHAT}: unknown key `{key}` (known: from, to)"),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CacheConfig> {
        CacheConfig::parse(toml::from_str::<toml::Table>(&format!("v = {text}")).unwrap().remove("v").unwrap())
    }

    #[test]
    fn cache_keys() {
        assert_eq!(parse("{}").unwrap(), CacheConfig::default());
        assert_eq!(
            parse(r#"{ from = "none", to = "inline" }"#).unwrap(),
            CacheConfig { from: CacheFrom::None, to: CacheTo::Inline }
        );
        assert_eq!(parse(r#"{ to = "registry" }"#).unwrap().to, CacheTo::Registry);
        assert_eq!(parse(r#"{ to = "beside" }"#).unwrap().to, CacheTo::Beside);
        let e = parse(r#"{ from = "always" }"#).unwrap_err().to_string();
        assert!(e.contains("cache.from must be \"auto\" or \"none\", found \"always\""), "{e}");
        let e = parse(r#"{ size = "1G" }"#).unwrap_err().to_string();
        assert!(e.contains("unknown key `size`"), "{e}");
        assert!(parse(r#""auto""#).unwrap_err().to_string().contains("must be a table"));
    }
}
