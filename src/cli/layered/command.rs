//! The command line's definition as the layers see it: where a flag is,
//! what kind of value it takes, its built-in default, and the definition
//! with the layers' values as defaults.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory};

use super::Layered;
use crate::cli::Cli;
use autodev::config::file::Raw;

/// The ids of the arguments typed on the command line (of the subcommand run).
pub(super) fn given_flags(m: &clap::ArgMatches) -> Vec<String> {
    let mut leaf = m;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    leaf.ids()
        .filter(|id| leaf.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// The command line's definition, with the defaults clap derives (a flag's
/// `false`) filled in, everywhere.
pub(crate) fn built() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |mut s| {
            s.build();
            s
        });
    }
    cmd
}

/// The first argument called `id` in `cmd` or its subcommands.
pub(crate) fn find_arg<'a>(
    cmd: &'a clap::Command,
    id: &str,
) -> Option<(&'a clap::Command, &'a clap::Arg)> {
    if let Some(a) = cmd.get_arguments().find(|a| a.get_id() == id) {
        return Some((cmd, a));
    }
    cmd.get_subcommands().find_map(|s| find_arg(s, id))
}

pub(super) fn clap_default(cmd: &clap::Command, id: &str) -> Option<String> {
    let (_, arg) = find_arg(cmd, id)?;
    let d: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    (!d.is_empty()).then(|| d.join(", "))
}

pub(super) fn is_flag(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

pub(super) fn is_list(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// `cmd` with each layered value as the default of its flag, everywhere the flag is.
pub(super) fn with_defaults(
    mut cmd: clap::Command,
    effective: &BTreeMap<&'static str, &Layered>,
) -> clap::Command {
    for (id, l) in effective {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == *id) else {
            continue;
        };
        let values: Vec<String> = match (&l.value, is_list(arg)) {
            (Raw::List(v), _) => v.clone(),
            (Raw::Text(t), _) => vec![t.clone()],
            (Raw::Bool(b), _) => vec![b.to_string()],
        };
        cmd = cmd.mut_arg(*id, |a| a.default_values(values));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| with_defaults(s, effective));
    }
    cmd
}
