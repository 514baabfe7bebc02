//! The set-up flags of the subcommands that run a project's tests (`exec`,
//! `run`, `batch`): whether and how the dependency environment is made,
//! and what its set-up may reach.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse::{duration, size};
use autodev::env::{AllowEntry, SetupMode, SetupSettings};

/// How the project's dependency environment is made (see docs/environments.md).
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Install step run once, with the network limited to the allowlist, before the tests;
    /// its result is cached by the project's manifests [default: detected from them].
    // Not `conflicts_with`: a file's value of one is checked alone (see
    // `settings`, which refuses both).
    #[arg(long, value_name = "CMD")]
    pub setup: Option<String>,
    /// No set-up phase: the tests run in the profile's image as it is.
    #[arg(long)]
    pub no_setup: bool,
    /// A host the set-up may reach besides those the image's package tools name: HOST,
    /// HOST:PORT or *.DOMAIN; repeatable. `none`: no network even in set-up.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Wall-clock limit of the set-up phase.
    #[arg(long, value_name = "DURATION", value_parser = duration("--setup-timeout"),
          default_value = autodev::env::DEFAULT_SETUP_TIMEOUT)]
    pub setup_timeout: Duration,
    /// Most the set-up may write outside /workspace and /tmp (what becomes the environment).
    #[arg(long, value_name = "SIZE", value_parser = size("--setup-disk"),
          default_value = autodev::env::DEFAULT_SETUP_DISK)]
    pub setup_disk: u64,
    /// CA bundle the set-up trusts [default: the one this host trusts].
    #[arg(long, value_name = "FILE")]
    pub setup_ca: Option<PathBuf>,
    /// A variable of this environment passed to the set-up only (a private index's token,
    /// say); never written into the environment image. Repeatable.
    #[arg(long = "setup-env", value_name = "NAME")]
    pub setup_env: Vec<String>,
    /// Build the environment even when the cache has it.
    #[arg(long)]
    pub rebuild_env: bool,
    /// An HTTP proxy the set-up's allowed requests are sent through (an operator's own
    /// forward proxy), as ADDRESS:PORT.
    #[arg(long, value_name = "ADDR:PORT", env = "AUTODEV_SETUP_PROXY")]
    pub setup_proxy: Option<SocketAddr>,
}

impl Default for SetupArgs {
    fn default() -> Self {
        SetupArgs {
            setup: None,
            no_setup: false,
            allow_host: Vec::new(),
            setup_timeout: autodev::env::default_setup_timeout(),
            setup_disk: autodev::env::default_setup_disk(),
            setup_ca: None,
            setup_env: Vec::new(),
            rebuild_env: false,
            setup_proxy: None,
        }
    }
}

impl SetupArgs {
    /// The settings these flags describe, checked.
    pub fn settings(&self) -> Result<SetupSettings, String> {
        let mode = match (&self.setup, self.no_setup) {
            (Some(_), true) => return Err("--setup and --no-setup contradict each other".into()),
            (None, true) => SetupMode::Off,
            (Some(c), false) => SetupMode::Command(c.clone()),
            (None, false) => SetupMode::Detect,
        };
        let allow_none = self.allow_host.iter().any(|h| h == "none");
        if allow_none && self.allow_host.len() > 1 {
            return Err("--allow-host none cannot be combined with other hosts".into());
        }
        let allow = if allow_none {
            Vec::new()
        } else {
            self.allow_host
                .iter()
                .map(|h| AllowEntry::parse(h).map_err(|e| format!("--allow-host {e}")))
                .collect::<Result<_, _>>()?
        };
        let env = self
            .setup_env
            .iter()
            .map(|name| match std::env::var(name) {
                Ok(v) => Ok((name.clone(), v)),
                Err(_) => Err(format!("--setup-env {name}: the variable is not set here")),
            })
            .collect::<Result<_, _>>()?;
        Ok(SetupSettings {
            mode,
            allow,
            allow_none,
            timeout: self.setup_timeout,
            disk: self.setup_disk,
            ca: self.setup_ca.clone(),
            env,
            rebuild: self.rebuild_env,
            upstream: self.setup_proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_settings_and_bad_ones_are_refused() {
        let a = SetupArgs {
            setup: Some("pip install x".into()),
            allow_host: vec!["pkg.example.org".into(), "*.example.net:443".into()],
            ..Default::default()
        };
        let s = a.settings().unwrap();
        assert_eq!(s.mode, SetupMode::Command("pip install x".into()));
        assert_eq!(s.allow.len(), 2);
        let none = SetupArgs {
            allow_host: vec!["none".into()],
            ..Default::default()
        };
        assert!(none.settings().unwrap().allow_none);
        for bad in [vec!["none", "x.org"], vec!["10.0.0.1"]] {
            let a = SetupArgs {
                allow_host: bad.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            assert!(
                a.settings().unwrap_err().starts_with("--allow-host"),
                "{bad:?}"
            );
        }
        let off = SetupArgs {
            no_setup: true,
            ..Default::default()
        };
        assert_eq!(off.settings().unwrap().mode, SetupMode::Off);
        let both = SetupArgs {
            setup: Some("pip install x".into()),
            no_setup: true,
            ..Default::default()
        };
        assert!(both.settings().unwrap_err().contains("contradict"));
        let unset = SetupArgs {
            setup_env: vec!["AUTODEV_TEST_SURELY_UNSET_VARIABLE".into()],
            ..Default::default()
        };
        assert!(unset.settings().unwrap_err().contains("not set here"));
    }
}
