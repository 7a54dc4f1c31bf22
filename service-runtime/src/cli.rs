//! Reading a binary's config from flags and environment variables.
//!
//! clap treats an environment variable that is set but empty (`FOO=` in a
//! dotenv file or a compose file) as a value, the empty string. For settings
//! here that is never what anyone means: an empty `SUPABASE_SECRET_KEY`
//! would count as "a key was given" and then fail at the first request, an
//! empty `DATABASE_URL` would fail to parse with a confusing message. So
//! both binaries parse through [`parse`], which treats a set-but-empty
//! variable as unset: the default applies, or clap reports the setting as
//! missing.

use std::ffi::OsStr;

use clap::{Command, Parser};

/// Parses `C` from the process's arguments and environment, treating empty
/// environment variables as unset. On error prints clap's message and exits,
/// like [`Parser::parse`].
pub fn parse<C: Parser>() -> C {
    let command = ignore_empty_env(C::command(), |name| {
        std::env::var_os(name).is_some_and(|value| value.is_empty())
    });
    let mut matches = command.get_matches();
    C::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| {
        let mut command = C::command();
        error.format(&mut command).exit()
    })
}

/// Drops the environment fallback of every argument whose variable
/// `is_empty` says is set to the empty string.
pub fn ignore_empty_env(command: Command, is_empty: impl Fn(&OsStr) -> bool) -> Command {
    command.mut_args(|arg| {
        let empty = arg.get_env().is_some_and(&is_empty);
        if empty { arg.env(None) } else { arg }
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    use super::ignore_empty_env;

    #[derive(Debug, Parser)]
    struct Settings {
        #[arg(long, env = "SERVICE_RUNTIME_TEST_KEY")]
        key: Option<String>,
    }

    #[test]
    fn only_empty_variables_lose_their_fallback() {
        let command = ignore_empty_env(Settings::command(), |name| {
            name == "SERVICE_RUNTIME_TEST_KEY"
        });
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id() == "key")
            .expect("key argument");
        assert_eq!(arg.get_env(), None);

        let untouched = ignore_empty_env(Settings::command(), |_| false);
        let arg = untouched
            .get_arguments()
            .find(|arg| arg.get_id() == "key")
            .expect("key argument");
        assert_eq!(arg.get_env(), Some("SERVICE_RUNTIME_TEST_KEY".as_ref()));
    }

    #[test]
    fn flags_still_parse_after_the_rewrite() {
        let command = ignore_empty_env(Settings::command(), |_| true);
        let matches = command
            .try_get_matches_from(["settings", "--key=value"])
            .expect("valid");
        let settings = Settings::from_arg_matches(&matches).expect("valid");
        assert_eq!(settings.key.as_deref(), Some("value"));
    }
}
