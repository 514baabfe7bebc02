//! Where autodev keeps files of its own for this user: the XDG base
//! folders, read once here (configuration, cache, state).

use std::path::PathBuf;

/// One of the XDG base folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    Config,
    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    Cache,
    /// `$XDG_STATE_HOME`, else `~/.local/state`.
    State,
}

impl Base {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Base::Config => ("XDG_CONFIG_HOME", ".config"),
            Base::Cache => ("XDG_CACHE_HOME", ".cache"),
            Base::State => ("XDG_STATE_HOME", ".local/state"),
        }
    }
}

/// autodev's folder under `base`, as `env` gives the variables: the XDG
/// variable when it is an absolute path (the specification says to ignore
/// a relative one), else the default under `$HOME`; `None` without either.
pub fn autodev_dir_in(base: Base, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let (var, under_home) = base.names();
    let absolute = |v: String| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    env(var)
        .and_then(absolute)
        .or_else(|| env("HOME").and_then(absolute).map(|h| h.join(under_home)))
        .map(|b| b.join("autodev"))
}

/// autodev's folder under `base`, from this process's environment.
pub fn autodev_dir(base: Base) -> Option<PathBuf> {
    autodev_dir_in(base, &|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_when_absolute_and_home_is_the_fallback() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let got = autodev_dir_in(
            Base::Cache,
            &env(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/h")]),
        );
        assert_eq!(got, Some(PathBuf::from("/c/autodev")));
        let got = autodev_dir_in(
            Base::State,
            &env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]),
        );
        assert_eq!(got, Some(PathBuf::from("/h/.local/state/autodev")));
        assert_eq!(autodev_dir_in(Base::Config, &env(&[("HOME", "")])), None);
    }
}
