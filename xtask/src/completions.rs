//! `completions SHELL` and `man --out DIR`: shell completion scripts and man
//! pages, generated from the flags ([`crate::flags`]) by clap_complete and
//! clap_mangen, so they cannot drift from what the binary accepts.
//!
//! People type `cargo xtask mzbuild ...` (`xtask` is a cargo alias, there is
//! no `xtask` program on PATH), so the scripts complete the command `cargo`:
//! when its first argument is `xtask`, clap_complete's completion of `xtask
//! ...` runs on the words after `cargo`; anything else goes to the completion
//! cargo had before (rustup's), if any. Image arguments are completed with
//! the names `cargo xtask mzbuild list` prints, asked at each completion (and
//! of the `--root` on the command line, if one is).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::flags::{Shell, Xtask};

/// The command as the completion scripts see it: `xtask`, the word after
/// `cargo`.
fn xtask_command() -> clap::Command {
    Xtask::command().name("xtask").bin_name("xtask")
}

/// The `mzbuild` subcommand.
fn mzbuild_command() -> clap::Command {
    let mut cmd = Xtask::command();
    cmd.build();
    cmd.find_subcommand("mzbuild").expect("`mzbuild` is a subcommand").clone()
}

/// Where a command takes image names: the index, among its positional
/// arguments, of the first one that is an image, and whether every later
/// one is one too.
struct ImageArgs {
    command: String,
    first: usize,
    many: bool,
}

/// The commands that take image names, from the flags: the positional
/// arguments called `image` or `images`.
fn image_args(mzbuild: &clap::Command) -> Vec<ImageArgs> {
    mzbuild
        .get_subcommands()
        .filter_map(|sub| {
            let positionals: Vec<&clap::Arg> = sub.get_positionals().filter(|a| !a.is_last_set()).collect();
            let first = positionals.iter().position(|a| matches!(a.get_id().as_str(), "image" | "images"))?;
            let many = positionals[first].get_id() == "images";
            Some(ImageArgs { command: sub.get_name().to_string(), first, many })
        })
        .collect()
}

/// Every option of `mzbuild` and its commands that takes a value (`--root
/// DIR`, `-j N`): its value is not a positional argument.
fn options_with_values(mzbuild: &clap::Command) -> Vec<String> {
    let mut out: Vec<String> = std::iter::once(mzbuild)
        .chain(mzbuild.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter(|a| !a.is_positional() && a.get_action().takes_values())
        .flat_map(|a| {
            let long = a.get_long().map(|l| format!("--{l}"));
            let short = a.get_short().map(|s| format!("-{s}"));
            long.into_iter().chain(short)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Result<String> {
    let mut cmd = xtask_command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "xtask", &mut out);
    let generated = String::from_utf8(out).context("clap_complete wrote a script that is not UTF-8")?;
    let mzbuild = mzbuild_command();
    Ok(match shell {
        Shell::Bash => bash(&generated, &mzbuild),
        Shell::Zsh => zsh(&generated),
        Shell::Fish => fish(&generated, &mzbuild),
    })
}

const HEADER: &str = "# Completion of `cargo xtask mzbuild ...`, written by `cargo xtask mzbuild completions`.\n\
                      # It completes the command `cargo`, and leaves every other `cargo ...` to cargo's own completion.\n";

/// clap's `_xtask` function, and `_cargo_xtask_mzbuild` for `cargo`, which
/// runs it on the words after `cargo` and then puts image names where the
/// command takes images.
fn bash(generated: &str, mzbuild: &clap::Command) -> String {
    let valued = options_with_values(mzbuild).join("|");
    let mut cases = String::new();
    for a in image_args(mzbuild) {
        let test = if a.many { format!("pos >= {}", a.first) } else { format!("pos == {}", a.first) };
        let _ = writeln!(cases, "        {}) (( {test} )) || return 0 ;;", a.command);
    }
    format!(
        r#"{HEADER}
{generated}
_cargo_xtask_mzbuild() {{
    if [[ ${{COMP_WORDS[1]-}} != xtask || $COMP_CWORD -lt 2 ]]; then
        if [[ -n $_cargo_xtask_mzbuild_next ]]; then
            "$_cargo_xtask_mzbuild_next" "$@"
        elif [[ $COMP_CWORD -eq 1 ]]; then
            COMPREPLY=($(compgen -W xtask -- "$2"))
        fi
        return 0
    fi
    # The mzbuild command under the cursor, and how many of its arguments
    # come before it.
    local i w sub= pos=0 dashdash=0 root=()
    if [[ ${{COMP_WORDS[2]-}} == mzbuild ]]; then
        for ((i = 3; i < COMP_CWORD; i++)); do
            w=${{COMP_WORDS[i]}}
            case $w in
                --) dashdash=1; break ;;
                --root) root=(--root "${{COMP_WORDS[i+1]}}"); ((i++)) ;;
                --root=*) root=("$w") ;;
                {valued}) ((i++)) ;;
                -*) ;;
                *) if [[ -z $sub ]]; then sub=$w; else ((pos++)); fi ;;
            esac
        done
    fi
    # Commands and options: clap's completion of `xtask ...`.
    local COMP_WORDS=("${{COMP_WORDS[@]:1}}") COMP_CWORD=$((COMP_CWORD - 1))
    _xtask xtask "$2" "$3"
    # Image names where the command takes images.
    [[ -n $sub && $dashdash == 0 && $2 != -* ]] || return 0
    case $3 in {valued}) return 0 ;; esac
    case $sub in
{cases}        *) return 0 ;;
    esac
    COMPREPLY=($(compgen -W "$("$1" xtask mzbuild "${{root[@]}}" list 2>/dev/null)" -- "$2"))
}}

# The completion cargo had (e.g. rustup's), for everything but `cargo xtask`.
if ! complete -p cargo >/dev/null 2>&1 && declare -F _completion_loader >/dev/null; then
    _completion_loader cargo >/dev/null 2>&1
fi
: "${{_cargo_xtask_mzbuild_next:=}}"
if [[ $(complete -p cargo 2>/dev/null) =~ -F\ ([^ ]+) && ${{BASH_REMATCH[1]}} != _cargo_xtask_mzbuild ]]; then
    _cargo_xtask_mzbuild_next=${{BASH_REMATCH[1]}}
fi
complete -F _cargo_xtask_mzbuild -o bashdefault -o default cargo
"#
    )
}

/// clap's `_xtask`, with image names for image arguments, and
/// `_cargo_xtask_mzbuild` registered for `cargo` in place of clap's
/// registration for `xtask`.
fn zsh(generated: &str) -> String {
    let body = generated.split("\nif [ \"$funcstack[1]\" = \"_xtask\" ]; then").next().unwrap_or(generated);
    let body = body
        .replace("#compdef xtask\n", "")
        .replace(":images:_default'", ":images:_cargo_xtask_mzbuild_images'")
        .replace(":image:_default'", ":image:_cargo_xtask_mzbuild_images'");
    format!(
        r#"#compdef cargo
{HEADER}
{body}
_cargo_xtask_mzbuild_images() {{
    local -a images root
    local -a line_words=(${{(z)LBUFFER}})
    local i=${{line_words[(i)--root]}}
    (( i < ${{#line_words}} )) && root=(--root ${{line_words[i+1]}})
    images=(${{(f)"$(cargo xtask mzbuild $root list 2>/dev/null)"}})
    compadd -a images
}}

_cargo_xtask_mzbuild() {{
    if [[ $words[2] == xtask ]] && (( CURRENT > 2 )); then
        shift words
        (( CURRENT-- ))
        _xtask "$@"
    elif (( $+functions[_cargo] )); then
        _cargo "$@"
    fi
}}

compdef _cargo_xtask_mzbuild cargo
"#
    )
}

/// clap's completions, for `cargo` when its first argument is `xtask`, and
/// image names for the commands that take images.
fn fish(generated: &str, mzbuild: &clap::Command) -> String {
    let body = generated.replace("complete -c xtask ", "complete -c cargo ").replacen(
        "    set -l cmd (commandline -opc)\n    set -e cmd[1]\n",
        "    set -l cmd (commandline -opc)\n    test \"$cmd[2]\" = xtask; or return 1\n    set -e cmd[1..2]\n",
        1,
    );
    let commands: Vec<String> = image_args(mzbuild).into_iter().map(|a| a.command).collect();
    format!(
        r#"{HEADER}
{body}
function __fish_cargo_xtask_mzbuild_images
    set -l words (commandline -opc)
    set -l root
    if set -l i (contains -i -- --root $words)
        set root --root $words[(math $i + 1)]
    end
    cargo xtask mzbuild $root list 2>/dev/null
end

complete -c cargo -n "__fish_xtask_using_subcommand mzbuild; and __fish_seen_subcommand_from {}" -f -a "(__fish_cargo_xtask_mzbuild_images)"
"#,
        commands.join(" ")
    )
}

/// Write `mzbuild.1` and one `mzbuild-COMMAND.1` per command into `dir`;
/// the files written.
pub fn man(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mzbuild = mzbuild_command()
        .name("mzbuild")
        .display_name("mzbuild")
        .bin_name("cargo xtask mzbuild")
        .version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("mzbuild".to_string(), mzbuild.clone())];
    for sub in mzbuild.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("mzbuild-{}", sub.get_name());
        let bin = format!("cargo xtask mzbuild {}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().name(name.clone()).display_name(name).bin_name(bin).version(env!("CARGO_PKG_VERSION")),
        ));
    }
    let mut written = vec![];
    for (name, cmd) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page).with_context(|| format!("rendering the man page {name}"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `man --out DIR`: write the pages and say where.
pub fn write_man_pages(dir: &Path) -> Result<mzbuild::Status> {
    let written = man(dir)?;
    mzbuild::ui::progress(format_args!(
        "wrote {} in {} (mzbuild.1, mzbuild-COMMAND.1); read one with `man -l {}`",
        mzbuild::ui::count(written.len(), "man page", "man pages"),
        dir.display(),
        dir.join("mzbuild.1").display()
    ));
    Ok(mzbuild::Status::Success)
}
