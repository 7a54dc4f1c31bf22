//! Reading a binary's config from flags and environment variables.
//!
//! Secrets (the settings declared with `hide_env_values`: `DATABASE_URL`,
//! `SUPABASE_SECRET_KEY`, `SUPABASE_SERVICE_ROLE_KEY`, `SUPABASE_JWT_SECRET`,
//! `COOKIE_SEAL_KEYS`, `TELEGRAM_BOT_TOKEN`) come only from the environment
//! or from a file named by `NAME_FILE` (a container secret, a Kubernetes
//! Secret volume, a systemd credential): a command-line flag is readable by
//! every local user in `ps` and `/proc/<pid>/cmdline`, so [`parse`] refuses
//! one, with a message that names the setting and never the value. A file's
//! content, minus one trailing newline, is the value; giving both `NAME`
//! and `NAME_FILE` is refused, as is an empty or unreadable file.
//!
//! clap treats an environment variable that is set but empty (`FOO=` in a
//! dotenv file or a compose file) as a value, the empty string. For settings
//! here that is never what anyone means: an empty `SUPABASE_SECRET_KEY`
//! would count as "a key was given" and then fail at the first request, an
//! empty `DATABASE_URL` would fail to parse with a confusing message. So
//! both binaries parse through [`parse`], which treats a set-but-empty
//! variable as unset: the default applies, or clap reports the setting as
//! missing.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, Parser};

/// Why the secret settings could not be read. Never holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    #[error(
        "{name} is a secret: give it in the environment ({name}) or a file ({name}_FILE), never as a command-line flag, which every local user can read"
    )]
    Flag { name: String },
    #[error("both {name} and {name}_FILE are set: give the secret one way only")]
    Both { name: String },
    #[error("{name}_FILE={path}: {source}", path = path.display())]
    Unreadable {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}_FILE={path} is empty", path = path.display())]
    Empty { name: String, path: PathBuf },
}

/// Parses `C` from the process's arguments and environment, treating empty
/// environment variables as unset and reading secrets as the module doc
/// says. On error prints the message and exits, like [`Parser::parse`].
pub fn parse<C: Parser>() -> C {
    let exit = |error: SecretSourceError| -> ! {
        eprintln!("error: {error}");
        std::process::exit(2)
    };
    let command = secrets_from_files(C::command(), |name| {
        std::env::var_os(name).filter(|value| !value.is_empty())
    })
    .unwrap_or_else(|error| exit(error));
    let command = ignore_empty_env(command, |name| {
        std::env::var_os(name).is_some_and(|value| value.is_empty())
    });
    let mut matches = command.get_matches();
    // Against the declared command: the rewrites above drop some `env`s.
    if let Err(error) = refuse_secret_flags(&C::command(), &matches) {
        exit(error);
    }
    C::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| {
        let mut command = C::command();
        error.format(&mut command).exit()
    })
}

/// Whether `arg` is a secret: declared with `hide_env_values`.
fn is_secret(arg: &clap::Arg) -> bool {
    arg.is_hide_env_values_set() && arg.get_env().is_some()
}

/// The environment variable a secret is read from.
fn env_name(arg: &clap::Arg) -> String {
    arg.get_env()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// For every secret `NAME` whose `NAME_FILE` `env` holds, the file's content
/// becomes the setting's value (a hidden default: flags stay refused).
pub fn secrets_from_files(
    command: Command,
    env: impl Fn(&OsStr) -> Option<OsString> + Copy,
) -> Result<Command, SecretSourceError> {
    let mut failure = None;
    let command = command.mut_args(|arg| {
        if !is_secret(&arg) || failure.is_some() {
            return arg;
        }
        let name = env_name(&arg);
        let Some(path) = env(OsStr::new(&format!("{name}_FILE"))).map(PathBuf::from) else {
            return arg;
        };
        if arg.get_env().and_then(env).is_some() {
            failure = Some(SecretSourceError::Both { name });
            return arg;
        }
        match std::fs::read_to_string(&path) {
            Err(source) => {
                failure = Some(SecretSourceError::Unreadable { name, path, source });
                arg
            }
            Ok(mut value) => {
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                if value.is_empty() {
                    failure = Some(SecretSourceError::Empty { name, path });
                    return arg;
                }
                arg.env(None).default_value(value).hide_default_value(true)
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(command),
    }
}

/// Refuses a secret given on the command line (see the module doc), in
/// `command` and its subcommands.
pub fn refuse_secret_flags(
    command: &Command,
    matches: &ArgMatches,
) -> Result<(), SecretSourceError> {
    for arg in command.get_arguments().filter(|arg| is_secret(arg)) {
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            return Err(SecretSourceError::Flag {
                name: env_name(arg),
            });
        }
    }
    if let Some((name, sub_matches)) = matches.subcommand()
        && let Some(sub) = command.find_subcommand(name)
    {
        refuse_secret_flags(sub, sub_matches)?;
    }
    Ok(())
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
    use std::ffi::{OsStr, OsString};

    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    use super::{SecretSourceError, ignore_empty_env, refuse_secret_flags, secrets_from_files};

    #[derive(Debug, Parser)]
    struct Settings {
        #[arg(long, env = "SERVICE_RUNTIME_TEST_KEY")]
        key: Option<String>,
        #[arg(long, env = "SERVICE_RUNTIME_TEST_SECRET", hide_env_values = true)]
        secret: Option<String>,
    }

    /// Parses `args` as `parse` does, with `vars` as the whole environment.
    fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: Vec<(OsString, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let env = |name: &OsStr| {
            vars.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        // secrets_from_files reads `env`; clap itself must not read the real
        // environment, so every other fallback is switched off afterwards.
        let command = secrets_from_files(Settings::command(), env)
            .map_err(|e| e.to_string())?
            .mut_args(|arg| arg.env(None));
        let declared = Settings::command();
        let matches = command
            .clone()
            .try_get_matches_from(std::iter::once("settings").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        refuse_secret_flags(&declared, &matches).map_err(|e| e.to_string())?;
        Settings::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn a_secret_as_a_flag_is_refused_without_repeating_it() {
        let error = parse_with(&["--secret=hunter2"], &[]).unwrap_err();
        assert!(
            error.contains("SERVICE_RUNTIME_TEST_SECRET is a secret"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        // Other settings still take flags.
        let settings = parse_with(&["--key=value"], &[]).expect("valid");
        assert_eq!(settings.key.as_deref(), Some("value"));
    }

    #[test]
    fn a_secret_comes_from_its_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("a directory");
        let file = dir.path().join("secret");
        std::fs::write(&file, "hunter2\n").expect("write");
        let path = file.to_str().expect("UTF-8");
        let settings =
            parse_with(&[], &[("SERVICE_RUNTIME_TEST_SECRET_FILE", path)]).expect("valid");
        assert_eq!(settings.secret.as_deref(), Some("hunter2"));
        // A _FILE of a setting that is not a secret means nothing.
        let settings = parse_with(&[], &[("SERVICE_RUNTIME_TEST_KEY_FILE", path)]).expect("valid");
        assert_eq!(settings.key, None);
    }

    #[test]
    fn both_ways_an_empty_or_a_missing_file_are_refused() {
        let dir = tempfile::tempdir().expect("a directory");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let missing = dir.path().join("missing");
        let both = parse_with(
            &[],
            &[
                ("SERVICE_RUNTIME_TEST_SECRET", "hunter2"),
                (
                    "SERVICE_RUNTIME_TEST_SECRET_FILE",
                    empty.to_str().expect("UTF-8"),
                ),
            ],
        )
        .unwrap_err();
        assert_eq!(
            both,
            SecretSourceError::Both {
                name: "SERVICE_RUNTIME_TEST_SECRET".into()
            }
            .to_string()
        );
        assert!(!both.contains("hunter2"));
        let error = parse_with(
            &[],
            &[(
                "SERVICE_RUNTIME_TEST_SECRET_FILE",
                empty.to_str().expect("UTF-8"),
            )],
        )
        .unwrap_err();
        assert!(error.ends_with("is empty"), "{error}");
        let error = parse_with(
            &[],
            &[(
                "SERVICE_RUNTIME_TEST_SECRET_FILE",
                missing.to_str().expect("UTF-8"),
            )],
        )
        .unwrap_err();
        assert!(error.contains("No such file"), "{error}");
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
