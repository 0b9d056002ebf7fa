//! `tracer agent`: the configuration from file and flags, then the agent.

use crate::{
    agent::{self, config::Config},
    cli::AgentArgs,
};

/// The configuration: the file's (or the defaults), then the flags on top.
pub fn config(args: &AgentArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        c.listen = listen;
    }
    if let Some(interval) = args.interval {
        c.interval = interval;
    }
    if let Some(lock) = &args.lock_file {
        c.lock_file = lock.clone();
    }
    if let Some(web) = &args.web_config {
        c.web_config = Some(web.clone());
    }
    if let Some(dir) = &args.pods_log_dir {
        c.pods_log_dir = dir.clone();
    }
    if args.no_dumps {
        c.dumps = None;
    } else if args.dump_dir.is_some() || args.dump_every.is_some() {
        let mut d = c.dumps.take().unwrap_or_default();
        if let Some(dir) = &args.dump_dir {
            d.dir = dir.clone();
        }
        if let Some(every) = args.dump_every {
            d.every = every;
        }
        c.dumps = Some(d);
    }
    c.validate()?;
    Ok(c)
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    agent::run(config(&args)?).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> anyhow::Result<Config> {
        let cli = Cli::try_parse_from(["tracer", "agent"].iter().chain(argv))?;
        let Command::Agent(args) = cli.command else {
            unreachable!()
        };
        config(&args)
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\ninterval = \"2s\"\n").unwrap();
        let path = file.to_str().unwrap();

        let c = parse(&["--config", path]).unwrap();
        assert_eq!(
            (c.listen.port(), c.interval),
            (9000, Duration::from_secs(2))
        );
        let c = parse(&["--config", path, "--listen", "127.0.0.1:1234", "-i", "1s"]).unwrap();
        assert_eq!(
            (c.listen.port(), c.interval),
            (1234, Duration::from_secs(1))
        );

        assert!(parse(&["--no-dumps"]).unwrap().dumps.is_none());
        let c = parse(&["--dump-dir", "/tmp/d", "--dump-every", "1m"]).unwrap();
        let d = c.dumps.unwrap();
        assert_eq!(
            (d.dir.to_str().unwrap(), d.every),
            ("/tmp/d", Duration::from_secs(60))
        );
        assert!(parse(&["--no-dumps", "--dump-dir", "/x"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
        let missing = parse(&["--config", "/nonexistent/agent.toml"]).unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read --config"));
    }

    #[test]
    fn periods_that_round_to_zero_or_too_short_are_refused_after_merging() {
        let err = |argv: &[&str]| match parse(argv) {
            Ok(c) => panic!("{argv:?} accepted: {c:?}"),
            Err(e) => format!("{e:#}"),
        };
        // Would round to a zero Duration, which tokio's interval panics on.
        assert!(err(&["--interval", "0.0000000001s"]).contains("interval"));
        assert!(err(&["--interval", "1ms"]).contains("interval"));
        assert!(err(&["--dump-every", "0.0000000001s"]).contains("every"));
        assert!(err(&["--dump-every", "10ms"]).contains("every"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "[dumps]\nevery = \"10ms\"\n").unwrap();
        let path = file.to_str().unwrap();
        assert!(err(&["--config", path]).contains("every"));
        // A flag can also make a file's setting valid.
        assert!(parse(&["--config", path, "--no-dumps"]).is_ok());
    }
}
