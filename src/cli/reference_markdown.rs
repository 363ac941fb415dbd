//! docs/reference/dhis2ctl.md, rendered from the clap definition of dhis2ctl (the one `--help`
//! and the man page, `cli::man`, come from): every command somebody types, with its usage, its
//! arguments and options, their defaults, values and environment variables. Pure: the command
//! tree in, Markdown out, in the definition's order.

use clap::{Arg, Command};

use super::help_tree::{shown, shown_arg};
use crate::markdown::literal_angle_brackets;

/// The whole page for `cmd` (the `dhis2ctl` command tree).
pub fn render(mut cmd: Command, generated_by: &str) -> String {
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = format!("# {name}\n\n");
    out.push_str(&format!(
        "Generated from dhis2ctl's command definitions (src/cli/) by `{generated_by}`: do not edit \
         this file, change the help texts there and run it again. `{name} COMMAND --help` and \
         `man {name}` say the same.\n\n"
    ));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&prose(&about.to_string()));
    }
    out.push_str(&usage(&cmd));

    let global: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !global.is_empty() {
        out.push_str("## Options of every command\n\n");
        for arg in global {
            out.push_str(&arg_item(arg));
        }
        out.push('\n');
    }

    let mut typed = Vec::new();
    let mut path = vec![name];
    for sub in shown(&cmd) {
        commands_typed(sub, &mut path, &mut typed);
    }
    out.push_str("## Commands\n\n");
    for (path, cmd) in &typed {
        let about = cmd
            .get_about()
            .map(|a| format!(": {}", literal_angle_brackets(first_line(&a.to_string()))))
            .unwrap_or_default();
        out.push_str(&format!(
            "- [`{path}`](#{}){about}\n",
            path.replace(' ', "-")
        ));
    }
    for (path, cmd) in &typed {
        out.push('\n');
        out.push_str(&command_section(path, cmd));
    }
    format!("{}\n", out.trim_end())
}

/// Each command a user types (`dhis2ctl backup run`), depth first: a command without
/// subcommands, or one with arguments of its own (`upgrade INSTANCE --to …` beside `upgrade
/// check`); not a mere group (`backup`).
fn commands_typed<'a>(
    cmd: &'a Command,
    path: &mut Vec<String>,
    out: &mut Vec<(String, &'a Command)>,
) {
    path.push(cmd.get_name().to_string());
    let nested: Vec<&Command> = shown(cmd).collect();
    if nested.is_empty() || cmd.get_arguments().any(shown_arg) {
        out.push((path.join(" "), cmd));
    }
    for sub in nested {
        commands_typed(sub, path, out);
    }
    path.pop();
}

fn command_section(path: &str, cmd: &Command) -> String {
    let mut out = format!("## `{path}`\n\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&prose(&about.to_string()));
    }
    out.push_str(&usage(cmd));
    for arg in cmd.get_arguments().filter(|a| shown_arg(a)) {
        out.push_str(&arg_item(arg));
    }
    out
}

/// A help text as paragraphs of its own.
fn prose(text: &str) -> String {
    format!("{}\n\n", literal_angle_brackets(text.trim_end()))
}

/// clap's usage line(s), as `--help` prints them.
fn usage(cmd: &Command) -> String {
    let text = cmd.clone().render_usage().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches("Usage:").trim())
        .filter(|l| !l.is_empty())
        .collect();
    format!("```text\n{}\n```\n\n", lines.join("\n"))
}

/// `- `-o, --output <FORMAT>`: help`, then its default, values and environment variable.
fn arg_item(arg: &Arg) -> String {
    let mut item = format!("- `{}`", arg_heading(arg));
    if let Some(help) = arg.get_long_help().or(arg.get_help()) {
        let help = literal_angle_brackets(&help.to_string());
        item.push_str(&format!(": {}", indented(&help)));
    }
    // As `--help` shows them: `[default: 3] [env: DHIS2_…]`.
    let mut notes = Vec::new();
    if arg.is_required_set() && !arg.is_positional() {
        notes.push("[required]".to_string());
    }
    let takes_values = arg.get_action().takes_values();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| format!("`{}`", v.to_string_lossy()))
        .collect();
    if takes_values && !defaults.is_empty() && !arg.is_hide_default_value_set() {
        notes.push(format!("[default: {}]", defaults.join(", ")));
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if takes_values && !values.is_empty() && !arg.is_hide_possible_values_set() {
        notes.push(format!("[possible values: {}]", values.join(", ")));
    }
    if let Some(env) = arg.get_env().filter(|_| !arg.is_hide_env_set()) {
        notes.push(format!("[env: `{}`]", env.to_string_lossy()));
    }
    if !notes.is_empty() {
        item.push_str(&format!(" {}", notes.join(" ")));
    }
    item.push('\n');
    item
}

/// `-o, --output <FORMAT>`, `--wait` or `<INSTANCE>`.
fn arg_heading(arg: &Arg) -> String {
    let value_names: Vec<String> = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| format!("<{n}>")).collect())
        .unwrap_or_else(|| vec![format!("<{}>", arg.get_id().as_str().to_uppercase())]);
    if arg.is_positional() {
        return value_names.join(" ");
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let mut heading = names.join(", ");
    if arg.get_action().takes_values() {
        heading.push(' ');
        heading.push_str(&value_names.join(" "));
    }
    heading
}

/// A help text inside a list item: its later lines indented to stay in the item.
fn indented(help: &str) -> String {
    help.trim_end()
        .lines()
        .enumerate()
        .map(|(i, line)| match (i, line.is_empty()) {
            (0, _) | (_, true) => line.to_string(),
            _ => format!("  {line}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn page() -> String {
        render(crate::cli::Cli::command(), "GENERATOR")
    }

    #[test]
    fn every_command_a_user_types_is_on_the_page_and_hidden_ones_are_not() {
        let page = page();
        for name in [
            "dhis2ctl backup run",
            "dhis2ctl backup copy",
            "dhis2ctl drill",
            "dhis2ctl man",
            "dhis2ctl upgrade",
            "dhis2ctl upgrade check",
        ] {
            assert!(page.contains(&format!("## `{name}`\n")), "{name} missing");
            let anchor = name.replace(' ', "-");
            assert!(page.contains(&format!("(#{anchor})")), "{name} not indexed");
        }
        assert!(!page.contains("## `dhis2ctl backup`\n"), "a mere group");
        assert!(
            !page.contains("dhis2ctl help"),
            "clap's help is not a command"
        );
        assert!(
            !page.contains("lock-seconds-for-tests"),
            "hidden flags stay hidden"
        );
        assert!(
            !page.contains("`dhis2ctl reference`"),
            "the hidden reference command is not on the page"
        );
    }

    #[test]
    fn options_show_their_defaults_values_and_environment_variables() {
        let page = page();
        assert!(page.contains("`DHIS2_SCRATCH_DATABASE_URL`"), "{page}");
        assert!(page.contains("- `--metrics-textfile <PATH>`: "), "{page}");
        assert!(
            page.contains("## Options of every command\n\n- `-o, --output <OUTPUT>`"),
            "{page}"
        );
    }

    #[test]
    fn a_help_text_of_several_lines_stays_in_its_list_item() {
        assert_eq!(indented("one\ntwo\n\nthree\n"), "one\n  two\n\n  three");
    }
}
