//! The `panserver` command.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use panserver::config::{DataArgs, ServeArgs, Settings};
use tracing_subscriber::EnvFilter;

/// pan's server: accounts, per-user file trees, deduplicated resumable uploads.
///
/// With no configuration it runs the embedded profile: SQLite, in-process upload
/// sessions and transfer queue, and a local directory store, all under --data.
#[derive(Debug, Parser)]
#[command(name = "panserver", version)]
struct Cli {
    #[command(flatten)]
    data: DataArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (with in-process transfer workers and maintenance)
    Serve(ServeArgs),
    /// Manage accounts
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Apply database migrations (needed before `serve` on MySQL/MariaDB)
    Migrate,
    /// Run one maintenance pass now: hash new contents, collect garbage
    Gc {
        /// Remove data unreferenced for at least this long [default: 3600]
        #[arg(long)]
        grace_secs: Option<i64>,
    },
    /// Check that every chunk is stored intact and every count matches; --repair fixes what is safe
    Check {
        #[arg(long)]
        repair: bool,
    },
    /// Run transfer workers that move staged chunks to the object store
    Transfer {
        /// Workers in this process
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Put dead-lettered jobs back on the queue, then exit
        #[arg(long)]
        requeue_dead: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account; the password comes from a prompt or, with --password-stdin, stdin
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        let password = s.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(password);
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PAN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    // Settings from flags and environment; the serve ones come from the
    // environment and defaults alone for the commands that do not serve.
    let settings = || -> anyhow::Result<Settings> {
        let (serve, serve_matches) = ServeArgs::from_env()?;
        Settings::resolve(&cli.data, &serve, &[&matches, &serve_matches])
    };
    match cli.command {
        Command::Serve(ref args) => {
            let sub = matches.subcommand_matches("serve").unwrap_or(&matches);
            panserver::serve(Settings::resolve(&cli.data, args, &[&matches, sub])?).await
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    password_stdin,
                },
        } => {
            let password = read_password(password_stdin)?;
            let app = panserver::build_app(&settings()?).await?;
            let user = app.add_user(&name, &password).await?;
            println!("created user {} (id {})", user.username, user.id);
            Ok(())
        }
        Command::Migrate => {
            let settings = settings()?;
            let meta = panserver::meta::SqlMeta::connect(&settings.database_url(), 2).await?;
            let version = meta.migrate().await?;
            println!("database at schema version {version}");
            Ok(())
        }
        Command::Transfer {
            workers,
            requeue_dead,
        } => {
            let settings = settings()?;
            if requeue_dead {
                let url = settings
                    .amqp_url
                    .clone()
                    .context("--requeue-dead needs PAN_AMQP_URL (RabbitMQ)")?;
                let queue = panserver::queue::AmqpQueue::connect(
                    &url,
                    &format!("{}.transfer", settings.namespace),
                    settings.transfer_attempts,
                )
                .await?;
                println!(
                    "requeued {} dead-lettered jobs",
                    queue.requeue_dead().await?
                );
                return Ok(());
            }
            panserver::run_transfer_workers(settings, workers).await
        }
        Command::Check { repair } => {
            let app = panserver::build_app(&settings()?).await?;
            let report = panserver::check::check(&app, repair).await?;
            for p in &report.problems {
                println!("problem: {p}");
            }
            println!(
                "checked {} chunks: {} problems, {} repaired",
                report.chunks_checked,
                report.problems.len(),
                report.repaired
            );
            if report.problems.len() > report.repaired {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Gc { grace_secs } => {
            let mut settings = settings()?;
            if let Some(secs) = grace_secs {
                settings.limits.gc_grace_secs = secs.max(0);
            }
            let app = panserver::build_app(&settings).await?;
            let hashed = panserver::gc::hash_new_contents(&app).await?;
            let removed = panserver::gc::collect_garbage(&app).await?;
            println!("hashed {hashed} contents, removed {removed} chunks");
            Ok(())
        }
    }
}
