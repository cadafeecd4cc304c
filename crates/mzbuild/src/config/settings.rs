//! Build settings that take part in every fingerprint (profile, arch,
//! coverage, sanitizer), with the environment defaults of the original.

use anyhow::{bail, Result};

use crate::env::{truthy, Env};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Optimized,
    Dev,
}

impl Profile {
    /// The name the original prints (`Profile.OPTIMIZED`) and passes as the
    /// `BUILD_PROFILE` build argument.
    pub fn upper(self) -> &'static str {
        match self {
            Profile::Release => "RELEASE",
            Profile::Optimized => "OPTIMIZED",
            Profile::Dev => "DEV",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => bail!("unknown architecture `{s}`: use x86_64 or aarch64"),
        }
    }

    /// GCC / Rust spelling (`ARCH_GCC`).
    pub fn gcc(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Go / Docker spelling (`ARCH_GO`, `--platform=linux/<go>`).
    pub fn go(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    pub fn rust_target(self) -> String {
        format!("{}-unknown-linux-gnu", self.gcc())
    }
}

pub const SANITIZERS: &[&str] = &["none", "address", "hwaddress", "cfi", "thread", "leak", "undefined"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub profile: Profile,
    pub arch: Arch,
    pub coverage: bool,
    pub sanitizer: String,
}

/// Settings as given on the command line; `None` means "use the default".
#[derive(Clone, Debug, Default)]
pub struct SettingsArgs {
    pub profile: Option<Profile>,
    pub arch: Option<String>,
    pub coverage: bool,
    pub sanitizer: Option<String>,
}

impl Settings {
    pub fn resolve(args: &SettingsArgs, env: &dyn Env) -> Result<Settings> {
        let profile = args.profile.unwrap_or(if truthy(env.var("CI_LTO").as_deref()) {
            Profile::Release
        } else {
            Profile::Optimized
        });
        let arch = match &args.arch {
            Some(a) => Arch::parse(a)?,
            None => Arch::host(),
        };
        let coverage = args.coverage || truthy(env.var("CI_COVERAGE_ENABLED").as_deref());
        let sanitizer = args
            .sanitizer
            .clone()
            .or_else(|| env.var("CI_SANITIZER").filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "none".to_string());
        if !SANITIZERS.contains(&sanitizer.as_str()) {
            bail!("unknown sanitizer `{sanitizer}`: use one of {}", SANITIZERS.join(", "));
        }
        Ok(Settings { profile, arch, coverage, sanitizer })
    }

    /// The settings part of every image's self hash, exactly as the original
    /// spells it (Python's `str()` of its enum and bool).
    pub fn fingerprint_string(&self) -> String {
        format!(
            "profile=Profile.{}arch={}coverage={}sanitizer={}mirror=ghcr",
            self.profile.upper(),
            self.arch.gcc(),
            if self.coverage { "True" } else { "False" },
            self.sanitizer
        )
    }
}

/// The fields of a [`Settings::fingerprint_string`], as a user writes
/// them (`profile`, `optimized`): the string has no separators, so it is
/// cut at the names it is known to hold, in order. A string of another
/// shape is one field, `settings`.
pub fn fields(fingerprint_string: &str) -> Vec<(&'static str, String)> {
    const NAMES: [&str; 5] = ["profile", "arch", "coverage", "sanitizer", "mirror"];
    let mut out = Vec::new();
    let mut rest = fingerprint_string;
    for (i, name) in NAMES.iter().enumerate() {
        let Some(after) = rest.strip_prefix(name).and_then(|r| r.strip_prefix('=')) else {
            return vec![("settings", fingerprint_string.to_string())];
        };
        let end = NAMES.get(i + 1).and_then(|next| after.find(&format!("{next}="))).unwrap_or(after.len());
        let raw = &after[..end];
        let value = match *name {
            "profile" => raw.strip_prefix("Profile.").unwrap_or(raw).to_lowercase(),
            "coverage" => raw.to_lowercase(),
            _ => raw.to_string(),
        };
        out.push((*name, value));
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    fn settings(args: SettingsArgs, env: &[(&str, &str)]) -> Settings {
        Settings::resolve(&args, &MapEnv(env)).unwrap()
    }

    #[test]
    fn environment_defaults() {
        let s = settings(
            SettingsArgs::default(),
            &[("CI_LTO", "1"), ("CI_COVERAGE_ENABLED", "yes"), ("CI_SANITIZER", "address")],
        );
        assert_eq!(s.profile, Profile::Release);
        assert!(s.coverage);
        assert_eq!(s.sanitizer, "address");
        let s = settings(SettingsArgs::default(), &[("CI_LTO", "false"), ("CI_COVERAGE_ENABLED", "0")]);
        assert_eq!(s.profile, Profile::Optimized);
        assert!(!s.coverage);
        assert_eq!(s.sanitizer, "none");
        // The command line wins over the environment.
        let s = settings(SettingsArgs { profile: Some(Profile::Dev), ..Default::default() }, &[("CI_LTO", "1")]);
        assert_eq!(s.profile, Profile::Dev);
    }

    #[test]
    fn settings_string() {
        let s = settings(SettingsArgs { arch: Some("x86_64".into()), ..Default::default() }, &[]);
        assert_eq!(
            s.fingerprint_string(),
            "profile=Profile.OPTIMIZEDarch=x86_64coverage=Falsesanitizer=nonemirror=ghcr"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let e =
            Settings::resolve(&SettingsArgs { sanitizer: Some("bogus".into()), ..Default::default() }, &MapEnv(&[]))
                .unwrap_err();
        assert!(e.to_string().contains("unknown sanitizer `bogus`"), "{e}");
        let e = Settings::resolve(&SettingsArgs { arch: Some("mips".into()), ..Default::default() }, &MapEnv(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("unknown architecture `mips`"), "{e}");
    }

    #[test]
    fn fields_of_the_fingerprint_string() {
        let s = Settings { profile: Profile::Dev, arch: Arch::Aarch64, coverage: true, sanitizer: "address".into() };
        let f = fields(&s.fingerprint_string());
        let want = [
            ("profile", "dev"),
            ("arch", "aarch64"),
            ("coverage", "true"),
            ("sanitizer", "address"),
            ("mirror", "ghcr"),
        ];
        assert_eq!(f, want.map(|(n, v)| (n, v.to_string())));
        assert_eq!(fields("odd"), [("settings", "odd".to_string())]);
    }
}
