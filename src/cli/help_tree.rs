//! Which commands and options the help generated from the clap definition shows (the man page,
//! `cli::man`, and the Markdown reference, `cli::reference_markdown`): what somebody types.

use clap::{Arg, Command};

/// The commands somebody types: not hidden ones, and not clap's own `help`.
pub fn shown(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
}

/// A command's own options: not hidden ones, not `--help`, and not the global ones (every
/// command takes those; they are shown once, with the program's).
pub fn shown_arg(arg: &Arg) -> bool {
    !arg.is_hide_set() && !arg.is_global_set() && !matches!(arg.get_id().as_str(), "help")
}
