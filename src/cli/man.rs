//! `dhis2ctl man`: the roff man page, dhis2ctl(1), generated from the same clap definition as
//! `--help`, so it describes the binary that prints it.
//!
//! clap_mangen writes one page per command and refers to the others (`dhis2ctl-backup(1)`);
//! we install one page, so every command is written out on it instead, with its options and
//! the environment variables that replace them.

use std::io::Write;

use clap::{Arg, Command};
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use super::help_tree::{shown, shown_arg};

/// Writes dhis2ctl(1) for `cmd` (the whole `dhis2ctl` command tree).
pub fn render(mut cmd: Command, w: &mut dyn Write) -> std::io::Result<()> {
    cmd.build();
    let man = Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    commands(&cmd).to_writer(w)?;
    exit_status().to_writer(w)?;
    man.render_version_section(w)
}

/// COMMANDS: each command a user types (`dhis2ctl backup run`), depth first.
fn commands(root: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let mut path = vec![root.get_name().to_string()];
    for sub in shown(root) {
        walk(&mut roff, &mut path, sub);
    }
    roff
}

fn walk(roff: &mut Roff, path: &mut Vec<String>, cmd: &Command) {
    path.push(cmd.get_name().to_string());
    let nested: Vec<&Command> = shown(cmd).collect();
    // A command with arguments of its own is typed too (`upgrade INSTANCE --to …` beside
    // `upgrade check`); a mere group (`backup`) is not.
    if nested.is_empty() || cmd.get_arguments().any(shown_arg) {
        command(roff, &path.join(" "), cmd);
    }
    for sub in nested {
        walk(roff, path, sub);
    }
    path.pop();
}

fn command(roff: &mut Roff, name: &str, cmd: &Command) {
    roff.control("SS", [name]);
    let about = cmd.get_long_about().or(cmd.get_about());
    if let Some(about) = about {
        roff.text([roman(about.to_string())]);
    }
    for arg in cmd.get_arguments().filter(|a| shown_arg(a)) {
        roff.control("TP", []);
        roff.text(arg_heading(arg));
        let mut body = Vec::new();
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            body.push(roman(help.to_string()));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && arg.get_action().takes_values() {
            body.push(roman(format!(" [default: {}]", defaults.join(", "))));
        }
        if let Some(env) = arg.get_env() {
            body.push(roman(" [env: "));
            body.push(bold(env.to_string_lossy().into_owned()));
            body.push(roman("]"));
        }
        roff.text(body);
    }
}

/// `-o, --output <FORMAT>` or `<INSTANCE>`, in man page type faces.
fn arg_heading(arg: &Arg) -> Vec<Inline> {
    let value_names: Vec<String> = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_else(|| vec![arg.get_id().as_str().to_uppercase()]);
    let mut out = Vec::new();
    if arg.is_positional() {
        for name in value_names {
            out.push(italic(format!("<{name}>")));
        }
        return out;
    }
    if let Some(short) = arg.get_short() {
        out.push(bold(format!("-{short}")));
        if arg.get_long().is_some() {
            out.push(roman(", "));
        }
    }
    if let Some(long) = arg.get_long() {
        out.push(bold(format!("--{long}")));
    }
    if arg.get_action().takes_values() {
        for name in value_names {
            out.push(roman(" "));
            out.push(italic(format!("<{name}>")));
        }
    }
    out
}

fn exit_status() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success."),
        (
            "1",
            "A failure met while working: a failed backup, copy or restore, a drill that did not \
             pass, an unreachable repository or database.",
        ),
        (
            "2",
            "The command line is wrong (a flag or its value), found before any work was done.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
    roff
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn page() -> String {
        let mut out = Vec::new();
        render(crate::cli::Cli::command(), &mut out).expect("render to memory");
        String::from_utf8(out).expect("roff is UTF-8")
    }

    #[test]
    fn every_command_a_user_types_is_on_the_page() {
        let page = page();
        for name in [
            "dhis2ctl backup run",
            "dhis2ctl backup copy",
            "dhis2ctl backup prune",
            "dhis2ctl drill",
            "dhis2ctl completions",
            "dhis2ctl man",
            "dhis2ctl demo seed",
            "dhis2ctl upgrade",
            "dhis2ctl upgrade check",
        ] {
            assert!(page.contains(&format!(".SS \"{name}\"")), "{name} missing");
        }
        assert!(
            !page.contains("dhis2ctl help"),
            "clap's help is not a command"
        );
        assert!(
            !page.contains("lock\\-seconds\\-for\\-tests"),
            "hidden flags stay hidden"
        );
    }

    #[test]
    fn options_show_their_environment_variables() {
        let page = page();
        assert!(page.contains("DHIS2_SCRATCH_DATABASE_URL"), "{page}");
        assert!(page.contains("\\-\\-metrics\\-textfile"), "{page}");
    }
}
