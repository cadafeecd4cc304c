//! `mzbuild.yml`: parsing and validation, with errors that name the file and
//! the key, and warnings for unknown keys (typos silently misbuild; a near
//! miss of a known key is an error).

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::ConfigError;

/// One image's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    pub name: String,
    pub publish: bool,
    pub description: Option<String>,
    pub mainline: bool,
    pub pre_images: Vec<PreImage>,
    /// In file order; passed before the built-in build args.
    pub build_args: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PreImage {
    Copy(CopySpec),
    CargoBuild(CargoBuildSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopySpec {
    /// Root-relative, normalised as the original's `pathlib` does: `.`
    /// components and trailing `/` dropped; `""` is the root (`source: .`).
    pub source: String,
    /// Relative to the image directory, normalised likewise.
    pub destination: String,
    pub matching: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CargoBuildSpec {
    pub bins: Vec<String>,
    pub examples: Vec<String>,
    pub strip: bool,
    pub features: Vec<String>,
    /// package -> [(src, dst)], files taken from the package's build-script
    /// `OUT_DIR`.
    pub extract: BTreeMap<String, Vec<(String, String)>>,
}

/// The outcome of parsing one file: the config (if it is usable), the
/// errors and the warnings, each naming the file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub config: Option<ImageConfig>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// With errors: the image's name, if the file names one (read from a
    /// `name:` line when the YAML does not parse), so that the images that
    /// depend on it can say what is wrong with it.
    pub name: Option<String>,
    /// With errors: what did parse (the pre-images without errors), under
    /// `name`, so that `lint` can check it too.
    pub partial: Option<ImageConfig>,
}

pub(crate) const TOP_KEYS: &[&str] = &["name", "publish", "description", "mainline", "pre-image", "build-args"];
pub(crate) const COPY_KEYS: &[&str] = &["type", "source", "destination", "matching"];
pub(crate) const CARGO_KEYS: &[&str] = &["type", "bin", "example", "strip", "features", "extract"];

pub fn parse(path: &str, bytes: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Some(map) = mapping(path, bytes, &mut p) else { return p };
    let mut cx = Cx { path, errors: &mut p.errors, warnings: &mut p.warnings };
    let top = cx.top_keys(&map);
    let name = cx.name(top.get("name").copied());
    let publish = cx.bool(top.get("publish").copied(), "publish", true);
    let mainline = cx.bool(top.get("mainline").copied(), "mainline", true);
    let description = cx.description(top.get("description").copied());
    let build_args = cx.build_args(top.get("build-args").copied());
    let pre_images = cx.pre_images(top.get("pre-image").copied());

    let sound = p.errors.is_empty();
    p.name = name.clone();
    let config = name.map(|name| ImageConfig { name, publish, description, mainline, pre_images, build_args });
    if sound {
        p.config = Some(config.expect("no errors means a name"));
    } else {
        p.partial = config;
    }
    p
}

/// The file as a YAML mapping; else the error (and the name, if a line
/// gives it) in `p`.
fn mapping(path: &str, bytes: &[u8], p: &mut Parsed) -> Option<serde_yaml::Mapping> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            p.errors.push(ConfigError::in_file(
                path,
                format!("not valid UTF-8 (first bad byte at offset {}): save it as UTF-8", e.valid_up_to()),
            ));
            return None;
        }
    };
    let value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let location = e.location().map(|l| (l.line(), l.column()));
            p.errors.push(ConfigError::Yaml { path: path.to_string(), location, message: e.to_string() });
            p.name = name_line(text);
            return None;
        }
    };
    let Value::Mapping(map) = value else {
        p.errors.push(ConfigError::in_file(
            path,
            format!(
                "must be a YAML mapping with at least a `name` key (found {}), e.g. `name: my-image`",
                kind(&value)
            ),
        ));
        return None;
    };
    Some(map)
}

/// The top-level keys of an image's configuration.
impl Cx<'_> {
    fn top_keys<'v>(&mut self, map: &'v serde_yaml::Mapping) -> BTreeMap<&'v str, &'v Value> {
        let mut top = BTreeMap::new();
        for (k, v) in map {
            match k.as_str() {
                Some(k) if TOP_KEYS.contains(&k) => {
                    top.insert(k, v);
                }
                Some(k) => self.unknown_key(None, k, TOP_KEYS),
                None => self.error(format!("keys must be strings, found {}", kind(k))),
            }
        }
        top
    }

    fn name(&mut self, v: Option<&Value>) -> Option<String> {
        match v {
            None => {
                self.error("missing `name`: add e.g. `name: my-image` (letters, digits and `-`)".to_string());
                None
            }
            Some(Value::String(n)) if valid_name(n) => Some(n.clone()),
            Some(Value::String(n)) => {
                self.error(format!("invalid `name` `{n}`: use only letters, digits and `-`"));
                None
            }
            Some(v) => {
                self.error(format!("`name` must be a string, found {}", kind(v)));
                None
            }
        }
    }

    fn description(&mut self, v: Option<&Value>) -> Option<String> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.error(format!("`description` must be a string, found {}", kind(v)));
                None
            }
        }
    }

    fn build_args(&mut self, v: Option<&Value>) -> Vec<(String, String)> {
        let mut build_args = Vec::new();
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    match (k.as_str(), scalar(v)) {
                        (Some(k), Some(v)) => build_args.push((k.to_string(), v)),
                        (None, _) => self.error(format!("`build-args` keys must be strings, found {}", kind(k))),
                        (Some(k), None) => {
                            self.error(format!("`build-args.{k}` must be a string or a number, found {}", kind(v)))
                        }
                    }
                }
            }
            Some(v) => self.error(format!("`build-args` must be a mapping of NAME: value, found {}", kind(v))),
        }
        build_args
    }

    fn pre_images(&mut self, v: Option<&Value>) -> Vec<PreImage> {
        let mut pre_images = Vec::new();
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(pi) = self.pre_image(i, item) {
                        pre_images.push(pi);
                    }
                }
            }
            Some(v) => self.error(format!("`pre-image` must be a list of actions, found {}", kind(v))),
        }
        pre_images
    }
}

/// The name of a file that is not YAML: its top-level `name: x` line, if
/// it has one.
fn name_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("name:")?.split(" #").next()?.trim().trim_matches(|c| c == '"' || c == '\'');
        valid_name(value).then(|| value.to_string())
    })
}

/// `./test//x/` -> `test/x`, `.` -> `` (the caller has rejected `..` and
/// absolute paths).
fn normalize(path: &str) -> String {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

pub fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

struct Cx<'a> {
    path: &'a str,
    errors: &'a mut Vec<ConfigError>,
    warnings: &'a mut Vec<ConfigError>,
}

impl Cx<'_> {
    fn error(&mut self, msg: String) {
        self.errors.push(ConfigError::in_file(self.path, msg));
    }

    /// An unknown key warns, unless it is a near miss of a known one.
    fn unknown_key(&mut self, at: Option<String>, key: &str, known: &'static [&'static str]) {
        let (path, key) = (self.path.to_string(), key.to_string());
        match super::near_miss(&key, known.iter().copied()) {
            Some(meant) => self.errors.push(ConfigError::MisspeltKey { path, at, key, meant }),
            None => self.warnings.push(ConfigError::UnknownKey { path, at, key, known }),
        }
    }

    fn bool(&mut self, v: Option<&Value>, key: &str, default: bool) -> bool {
        match v {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                self.error(format!("`{key}` must be true or false, found {}", kind(v)));
                default
            }
        }
    }

    fn pre_image(&mut self, i: usize, item: &Value) -> Option<PreImage> {
        let at = format!("pre-image #{}", i + 1);
        let Value::Mapping(m) = item else {
            self.error(format!("{at} must be a mapping with a `type`, found {}", kind(item)));
            return None;
        };
        let get = |k: &str| m.get(Value::String(k.to_string()));
        let ty = match get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(v) => {
                self.error(format!("{at}: `type` must be a string, found {}", kind(v)));
                return None;
            }
            None => {
                self.error(format!("{at}: missing `type` (`copy` or `cargo-build`)"));
                return None;
            }
        };
        let known = match ty {
            "copy" => COPY_KEYS,
            "cargo-build" => CARGO_KEYS,
            other => {
                self.error(format!("{at}: unknown pre-image type `{other}`: use `copy` or `cargo-build`"));
                return None;
            }
        };
        for k in m.keys() {
            match k.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => self.unknown_key(Some(format!("{at} ({ty})")), k, known),
                None => self.error(format!("{at}: keys must be strings, found {}", kind(k))),
            }
        }
        let n_errors = self.errors.len();
        let pi = if ty == "copy" {
            let source =
                self.required_string(&at, get("source"), "source", "a directory relative to the repository root");
            let destination =
                self.required_string(&at, get("destination"), "destination", "a directory relative to the image");
            let matching = match get("matching") {
                None | Some(Value::Null) => "*".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => {
                    self.error(format!("{at}: `matching` must be a string (a git pathspec), found {}", kind(v)));
                    String::new()
                }
            };
            if let Some(s) = &source {
                if s.starts_with('/') || s.split('/').any(|c| c == "..") {
                    self.error(format!(
                        "{at}: `source` `{s}` must be a path inside the repository, relative to its root"
                    ));
                }
            }
            if let Some(d) = &destination {
                if d.starts_with('/') || d.split('/').any(|c| c == "..") {
                    self.error(format!("{at}: `destination` `{d}` must be a path inside the image directory"));
                }
            }
            PreImage::Copy(CopySpec {
                source: normalize(&source.unwrap_or_default()),
                destination: normalize(&destination.unwrap_or_default()),
                matching,
            })
        } else {
            let bins = self.string_or_list(&at, get("bin"), "bin");
            let examples = self.string_or_list(&at, get("example"), "example");
            if bins.is_empty() && examples.is_empty() {
                self.error(format!("{at} (cargo-build): give at least one `bin` or `example`"));
            }
            let strip = self.bool(get("strip"), "strip", true);
            let features = self.string_or_list(&at, get("features"), "features");
            let mut extract = BTreeMap::new();
            match get("extract") {
                None | Some(Value::Null) => {}
                Some(Value::Mapping(pkgs)) => {
                    for (pkg, files) in pkgs {
                        let (Some(pkg), Value::Mapping(files)) = (pkg.as_str(), files) else {
                            self.error(format!("{at}: `extract` must map a package name to {{src: dst}}"));
                            continue;
                        };
                        let mut pairs = Vec::new();
                        for (src, dst) in files {
                            match (src.as_str(), dst.as_str()) {
                                (Some(s), Some(d)) => pairs.push((s.to_string(), d.to_string())),
                                _ => self.error(format!("{at}: `extract.{pkg}` must map file names to file names")),
                            }
                        }
                        extract.insert(pkg.to_string(), pairs);
                    }
                }
                Some(v) => self.error(format!("{at}: `extract` must be a mapping, found {}", kind(v))),
            }
            PreImage::CargoBuild(CargoBuildSpec { bins, examples, strip, features, extract })
        };
        (self.errors.len() == n_errors).then_some(pi)
    }

    fn required_string(&mut self, at: &str, v: Option<&Value>, key: &str, what: &str) -> Option<String> {
        match v {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) => {
                self.error(format!("{at}: missing `{key}` ({what})"));
                None
            }
            Some(v) => {
                self.error(format!("{at}: `{key}` must be a non-empty string ({what}), found {}", kind(v)));
                None
            }
        }
    }

    fn string_or_list(&mut self, at: &str, v: Option<&Value>, key: &str) -> Vec<String> {
        match v {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(items)) => {
                let mut out = vec![];
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        v => self.error(format!("{at}: `{key}` entries must be strings, found {}", kind(v))),
                    }
                }
                out
            }
            Some(v) => {
                self.error(format!("{at}: `{key}` must be a string or a list of strings, found {}", kind(v)));
                vec![]
            }
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a tagged value ({})", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        strings(&parse("img/mzbuild.yml", yaml.as_bytes()).errors)
    }

    fn strings(v: &[ConfigError]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn full_config() {
        let p = parse(
            "a/mzbuild.yml",
            b"name: app\npublish: false\ndescription: d\npre-image:\n  - type: cargo-build\n    bin: [x, y]\n    example: e\n    strip: false\n    features: f\n    extract:\n      pkg: {a.txt: b.txt}\n  - type: copy\n    source: test/data/\n    destination: data\nbuild-args:\n  VERSION: '1.0'\n  N: 3\n",
        );
        assert!(p.errors.is_empty() && p.warnings.is_empty(), "{p:?}");
        let c = p.config.unwrap();
        assert_eq!(c.name, "app");
        assert!(!c.publish && c.mainline);
        assert_eq!(c.build_args, vec![("VERSION".into(), "1.0".into()), ("N".into(), "3".into())]);
        let PreImage::CargoBuild(cb) = &c.pre_images[0] else { panic!() };
        assert_eq!(cb.bins, vec!["x", "y"]);
        assert_eq!(cb.examples, vec!["e"]);
        assert!(!cb.strip);
        assert_eq!(cb.extract["pkg"], vec![("a.txt".to_string(), "b.txt".to_string())]);
        assert_eq!(
            c.pre_images[1],
            PreImage::Copy(CopySpec { source: "test/data".into(), destination: "data".into(), matching: "*".into() })
        );
    }

    #[test]
    fn copy_paths_are_normalised() {
        let copy = |source: &str, destination: &str| {
            let yaml = format!(
                "name: a\npre-image:\n  - type: copy\n    source: '{source}'\n    destination: '{destination}'\n"
            );
            let p = parse("img/mzbuild.yml", yaml.as_bytes());
            let Some(PreImage::Copy(c)) = p.config.and_then(|c| c.pre_images.into_iter().next()) else {
                panic!("{:?}", p.errors)
            };
            (c.source, c.destination)
        };
        assert_eq!(copy(".", "."), ("".into(), "".into()));
        assert_eq!(copy("./", "./tests/"), ("".into(), "tests".into()));
        assert_eq!(copy("./test/x", "x"), ("test/x".into(), "x".into()));
        assert_eq!(copy("test/y/", "y//z"), ("test/y".into(), "y/z".into()));
        assert_eq!(copy("test/./y/.", "y"), ("test/y".into(), "y".into()));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let e = errors("name: [unclosed");
        // The error points at where the parser gave up: the end of the input.
        assert!(e[0].starts_with("img/mzbuild.yml:2:1: malformed YAML"), "{e:?}");
        let e = errors("- a\n- b\n");
        assert!(e[0].contains("must be a YAML mapping") && e[0].contains("a list"), "{e:?}");
        let e = errors("publish: true\n");
        assert!(e[0].contains("missing `name`"), "{e:?}");
        let e = errors("name: my_image\n");
        assert!(e[0].contains("invalid `name` `my_image`"), "{e:?}");
        let e = errors("name: a\npre-image:\n  - type: tarball\n");
        assert!(e[0].contains("pre-image #1: unknown pre-image type `tarball`"), "{e:?}");
        let e = errors("name: a\npre-image:\n  - type: copy\n    source: x\n");
        assert!(e[0].contains("pre-image #1: missing `destination`"), "{e:?}");
        let e = errors("name: a\npre-image:\n  - type: cargo-build\n");
        assert!(e[0].contains("give at least one `bin` or `example`"), "{e:?}");
        let e = errors("name: a\npublish: maybe\n");
        assert!(e[0].contains("`publish` must be true or false"), "{e:?}");
        let p = parse("img/mzbuild.yml", b"name: a\n\xff\n");
        assert!(p.errors[0].to_string().contains("not valid UTF-8"), "{:?}", p.errors);
    }

    #[test]
    fn unknown_keys_warn() {
        let p = parse(
            "img/mzbuild.yml",
            b"name: a\nowner: x\npre-image:\n  - type: cargo-build\n    bin: b\n    split_debuginfo: true\n",
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let w = strings(&p.warnings);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("img/mzbuild.yml: unknown key `owner`"), "{w:?}");
        assert!(w[1].contains("pre-image #1 (cargo-build): unknown key `split_debuginfo`"), "{w:?}");
    }

    #[test]
    fn misspelt_keys_are_errors() {
        let p = parse("img/mzbuild.yml", b"name: a\npubish: false\npre-image:\n  - type: copy\n    source: s\n    destination: d\n    destinaton: e\n");
        assert!(p.warnings.is_empty() && p.config.is_none(), "{p:?}");
        let e = strings(&p.errors);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("img/mzbuild.yml: unknown key `pubish`: did you mean `publish`?"), "{e:?}");
        assert!(e[1].contains("pre-image #1 (copy): unknown key `destinaton`: did you mean `destination`?"), "{e:?}");
        // What parsed is kept, for lint.
        let partial = p.partial.unwrap();
        assert_eq!((partial.name.as_str(), partial.pre_images.len()), ("a", 1));
    }

    #[test]
    fn a_file_that_is_not_yaml_still_names_its_image() {
        assert_eq!(parse("i/mzbuild.yml", b"name: app\npublish: [true\n").name.as_deref(), Some("app"));
        assert_eq!(parse("i/mzbuild.yml", b"name: 'app' # x\n\tk: v\n").name.as_deref(), Some("app"));
        assert_eq!(parse("i/mzbuild.yml", b"  name: app\n\tk: v\n").name, None);
    }
}
