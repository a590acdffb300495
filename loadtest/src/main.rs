//! `natter-loadtest`: sizes Natter with scenarios run from one or more worker processes, a floor
//! server to measure against, and the standard suite.
//!
//! # Layout
//! - `plan`: users, conversations and senders of a run; provisioning through the server API.
//! - `conn`: one client connection (small buffers, chosen source address) and its accounting.
//! - `worker`: a worker process holding its share of the connections.
//! - `run`: the coordinator: workers, progress, drain, merge, judgement.
//! - `stats`: HDR histograms and counters, merged across processes.
//! - `report`: the summary JSON, the table, thresholds.
//! - `procfs`: machine busy share, server RSS and CPU from /proc.
//! - `floor`: the minimal broadcast server.
//! - `suite`: the standard suite (starts servers, runs scenarios, writes results).
//! - `auth_flood`: login latency while a registration flood keeps the password hasher busy.
//! - `inbox`: the conversation-list latency of a user in a thousand conversations.
//! - `push`: what push notifications cost a stored message, and the pushes a node sends per second.
//! - `stamp`: what a result was measured with (versions, commit, machine, configuration).
//! - `tls`: trust for `wss://` targets and `https://` calls (the system's roots and `--tls-ca`).

mod auth_flood;
mod conn;
mod floor;
mod inbox;
mod plan;
mod procfs;
mod push;
mod report;
mod run;
mod stamp;
mod stats;
mod suite;
mod tls;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "natter-loadtest", version, about = "Load tests for Natter, measured against a floor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario against running servers.
    Run(Box<run::RunArgs>),
    /// Serve the floor: a minimal WebSocket broadcast server speaking the harness's frames.
    Floor {
        #[arg(long, default_value = "127.0.0.1:9090")]
        bind: SocketAddr,
        /// Print the bound address as a JSON line on stdout.
        #[arg(long)]
        announce: bool,
    },
    /// Run the standard suite and write loadtest/results/<date>.md and .json.
    Suite(suite::SuiteArgs),
    /// Login latency during a registration flood (prints one JSON line).
    AuthFlood(auth_flood::AuthFloodArgs),
    /// Conversation-list latency for a user in many conversations (prints one JSON line).
    Inbox(inbox::InboxArgs),
    /// Push notifications: the cost per stored message with push off and on (no device), and
    /// the pushes one node sends per second; prints (and with --out writes) a Markdown report.
    Push(push::PushArgs),
    /// (internal) One worker process of a run.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        plan: String,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        count: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => {
                let summary = run::run(&args).await?;
                if !args.quiet {
                    print!("{}", summary.table());
                }
                Ok(summary.passed)
            }
            Cmd::Floor { bind, announce } => floor::serve(bind, announce).await.map(|_| true),
            Cmd::Suite(args) => suite::run(&args).await,
            Cmd::AuthFlood(args) => {
                let outcome = auth_flood::run(&args).await?;
                println!("{}", serde_json::to_string(&outcome)?);
                Ok(true)
            }
            Cmd::Inbox(args) => {
                let outcome = inbox::run(&args).await?;
                println!("{}", serde_json::to_string(&outcome)?);
                Ok(true)
            }
            Cmd::Push(args) => {
                println!("{}", push::run(&args).await?);
                Ok(true)
            }
            Cmd::Worker { plan, index, count } => worker::run(&plan, index, count).await.map(|_| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
