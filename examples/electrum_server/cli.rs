//! Command-line flags, parsed by `clap` into [`Options`].
//!
//! Every flag but `--proxy-protocol` (a switch) takes one value, as
//! `--flag VALUE` or `--flag=VALUE`; `--pay-to` and the listener flags
//! (`--listen`, `--tls`, `--ws`, `--wss`, `--http`) may be repeated.
//! Without any listener flag (or `SERVICES`), the server listens for TCP on
//! 127.0.0.1:50001 and TLS on 127.0.0.1:50002. Durations are seconds
//! (fractions allowed).
//! The flags ElectrumX also has can be given as its environment variables
//! (`MAX_SESSIONS`, `COST_SOFT_LIMIT`, …); a flag wins over its variable.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitcoin::{Amount, Denomination};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::server::{LogFormat, Options};
use crate::services::{self, Entry, Service, ServiceKind};

/// The most bitcoin there can ever be, in satoshis: no payment, and no sum of
/// payments, may exceed it.
const MAX_MONEY: u64 = 21_000_000 * 100_000_000;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Run(Box<Options>),
    /// Print [`help`] and exit.
    Help,
}

/// The `--exempt-networks` list (a newtype, which `clap` takes as one value).
#[derive(Clone, Debug)]
struct Networks(Vec<ipnetwork::IpNetwork>);

/// The `--services` list (a newtype, which `clap` takes as one value).
#[derive(Clone, Debug)]
struct Services(Vec<Entry>);

/// A limit that `none` lifts.
#[derive(Clone, Copy, Debug)]
struct Limit(Option<usize>);

/// The flags, each `None` (or empty) when neither it nor its environment
/// variable is given, so that [`Options::default`] stays the one source of
/// the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "electrum_server",
    about = "An Electrum protocol 1.4–1.7 server on an in-process regtest chain, \
             built on the indexer-sessions SessionManager.",
    override_usage = "cargo run --example electrum_server --features tokio -- [FLAGS]",
    disable_version_flag = true,
    max_term_width = 100
)]
struct Flags {
    /// Blocks mined on top of genesis at start.
    #[arg(long, value_name = "N", help_heading = "Chain", value_parser = number::<u32>)]
    blocks: Option<u32>,
    /// Pay AMOUNT to a regtest address (bcrt1…, m…/n…, 2…) in the initial chain;
    /// AMOUNT is in BTC (1.5, 0.001), or in satoshis with a `sat` suffix (150000sat);
    /// repeatable.
    #[arg(long, value_name = "ADDRESS:AMOUNT", help_heading = "Chain", value_parser = pay_to)]
    pay_to: Vec<(String, u64)>,
    /// Mine a block every SECS seconds; 0 = only on demand (admin `generate`).
    #[arg(long, value_name = "SECS", help_heading = "Chain", value_parser = seconds_or_zero)]
    block_interval: Option<Duration>,

    /// Electrum TCP listener; repeatable. Any listener flag (or SERVICES) replaces the
    /// default listeners.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners", value_parser = addr)]
    listen: Vec<SocketAddr>,
    /// Electrum TLS (SSL) listener, as wallets connect by default (`HOST:PORT:s`);
    /// repeatable.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners", value_parser = addr)]
    tls: Vec<SocketAddr>,
    /// WebSocket listener (JSON-RPC in text messages); repeatable.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners", value_parser = addr)]
    ws: Vec<SocketAddr>,
    /// WebSocket over TLS listener; repeatable.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners", value_parser = addr)]
    wss: Vec<SocketAddr>,
    /// HTTP JSON-RPC listener: POST a request or batch, or GET /v1/METHOD?params=[...];
    /// repeatable.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners", value_parser = addr)]
    http: Vec<SocketAddr>,
    /// Listeners as ElectrumX lists them, comma-separated PROTOCOL://HOST:PORT with PROTOCOL
    /// tcp, ssl, ws, wss, http, or rpc for the admin listener (an empty HOST is every IPv4
    /// interface), e.g. tcp://127.0.0.1:50001,ssl://:50002,wss://:50004; the listener flags
    /// add to it. Every listener's sessions share one set of limits and group costs.
    #[arg(long, value_name = "LIST", env = "SERVICES", help_heading = "Listeners", value_parser = service_list)]
    services: Option<Services>,
    /// The TLS listeners' certificate chain (PEM, leaf first); without it and --tls-key, a
    /// self-signed certificate is generated at start and its SHA-256 fingerprint printed.
    #[arg(
        long,
        value_name = "PATH",
        env = "SSL_CERTFILE",
        help_heading = "Listeners",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "PATH",
        env = "SSL_KEYFILE",
        help_heading = "Listeners",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Admin JSON-RPC listener (getinfo, sessions, groups, disconnect, ban, unban, generate).
    #[arg(long, value_name = "ADDR", help_heading = "Network", value_parser = addr)]
    admin: Option<SocketAddr>,
    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's `send-proxy` or
    /// `send-proxy-v2` sends) before every Electrum connection's requests (on the TLS
    /// listener, before the handshake), and use the client address it carries for groups,
    /// bans and limits; a connection without a valid header within 5 s is closed without a
    /// session.
    #[arg(long, help_heading = "Network")]
    proxy_protocol: bool,
    /// Pad output against traffic analysis, as ElectrumX does: after a 1 KiB warm-up, TCP
    /// and TLS output goes in packets of at least 1 KiB (messages wait up to 1 s to gather),
    /// WebSocket messages are each padded to at least 1 KiB. `tls` pads the TLS listeners
    /// (ssl, wss), `on` every listener but HTTP, `off` none.
    #[arg(long, value_name = "MODE", help_heading = "Listeners", value_parser = padding_mode)]
    padding: Option<crate::padding::PaddingMode>,
    /// Noise pings to protocol 1.7 clients, as ElectrumX sends them: on a block, a client
    /// sent fewer than two notifications gets a padded server.ping, then more with
    /// probability 0.1; on a mempool change, one per ten minutes on average. `on` or `off`.
    #[arg(long, value_name = "on|off", help_heading = "Listeners", value_parser = on_off)]
    noise: Option<bool>,
    /// Longest request line; longer ones are dropped.
    #[arg(long, value_name = "BYTES", env = "MAX_RECV", help_heading = "Network", value_parser = positive::<usize>)]
    max_recv: Option<usize>,
    /// Largest response; larger ones become an error, and a batch's replies stop growing here.
    #[arg(long, value_name = "BYTES", env = "MAX_SEND", help_heading = "Network", value_parser = positive::<usize>)]
    max_send: Option<usize>,
    /// Bytes of replies and notifications waiting for one client (one larger message may
    /// wait alone).
    #[arg(long, value_name = "BYTES", help_heading = "Network", value_parser = positive::<usize>)]
    max_queued: Option<usize>,
    /// Longest wait for a client to read (each write, and room in its queue); past it the
    /// client is disconnected.
    #[arg(long, value_name = "SECS", help_heading = "Network", value_parser = seconds)]
    max_send_delay: Option<Duration>,

    /// Sessions at once; the listener pauses here and resumes at 95 %.
    #[arg(long, value_name = "N", env = "MAX_SESSIONS", help_heading = "Session limits", value_parser = positive::<usize>)]
    max_sessions: Option<usize>,
    /// Sessions per IP group (/24, /48), or `none`.
    #[arg(long, value_name = "N", help_heading = "Session limits", value_parser = limit)]
    max_sessions_per_group: Option<Limit>,
    /// Cost where throttling starts.
    #[arg(long, value_name = "COST", env = "COST_SOFT_LIMIT", help_heading = "Session limits", value_parser = cost)]
    cost_soft_limit: Option<f64>,
    /// Cost where the client is disconnected (-101).
    #[arg(long, value_name = "COST", env = "COST_HARD_LIMIT", help_heading = "Session limits", value_parser = cost)]
    cost_hard_limit: Option<f64>,
    /// Concurrent requests per unthrottled session.
    #[arg(long, value_name = "N", env = "INITIAL_CONCURRENT", help_heading = "Session limits", value_parser = positive::<u32>)]
    initial_concurrent: Option<u32>,
    /// Throttle sleep per request at full throttle, in milliseconds.
    #[arg(long, value_name = "MS", env = "REQUEST_SLEEP", help_heading = "Session limits", value_parser = number::<u64>)]
    request_sleep_ms: Option<u64>,
    /// Time a request may take before -102.
    #[arg(long, value_name = "SECS", env = "REQUEST_TIMEOUT", help_heading = "Session limits", value_parser = seconds)]
    request_timeout: Option<Duration>,
    /// Idle time before a session is closed.
    #[arg(long, value_name = "SECS", env = "SESSION_TIMEOUT", help_heading = "Session limits", value_parser = seconds)]
    session_timeout: Option<Duration>,
    /// How often idle sessions are looked for.
    #[arg(long, value_name = "SECS", help_heading = "Session limits", value_parser = seconds)]
    sweep_interval: Option<Duration>,
    /// Comma-separated networks whose clients belong to no group; `none` groups every
    /// address, loopback included.
    #[arg(long, value_name = "CIDRS", help_heading = "Session limits", value_parser = networks)]
    exempt_networks: Option<Networks>,
    /// Scripthash subscriptions per session, or `none`.
    #[arg(long, value_name = "N", help_heading = "Session limits", value_parser = limit)]
    max_subs_per_session: Option<Limit>,
    /// Bytes in or out that cost 1.
    #[arg(long, value_name = "BYTES", env = "BANDWIDTH_UNIT_COST", help_heading = "Session limits", value_parser = unit_cost)]
    bandwidth_unit_cost: Option<f64>,

    /// Serve Prometheus text at http://ADDR/metrics [default: off].
    #[arg(long, value_name = "ADDR", help_heading = "Observability", value_parser = addr)]
    metrics: Option<SocketAddr>,
    /// Serve a live status page at http://ADDR/ [default: off].
    #[arg(long, value_name = "ADDR", help_heading = "Observability", value_parser = addr)]
    status: Option<SocketAddr>,
    /// `text` or `json` (one object per line); RUST_LOG picks what is logged (e.g. `info`,
    /// `debug`).
    #[arg(long, value_name = "FORMAT", help_heading = "Observability", value_parser = log_format)]
    log_format: Option<LogFormat>,

    /// Share IP groups' costs, their session counts and bans with every server on this
    /// Redis, e.g. redis://127.0.0.1:6379/ [default: off, kept in this process].
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "URL", help_heading = "Several servers", value_parser = text)]
    redis: Option<String>,
    /// This server's name among them, unique [default: HOSTNAME-PID].
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "NAME", help_heading = "Several servers", value_parser = text)]
    node_name: Option<String>,
    /// How often this server's view is reconciled with Redis, in milliseconds.
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "MS", help_heading = "Several servers", value_parser = positive::<u64>)]
    redis_sync_ms: Option<u64>,
    /// How long a server's share outlives its last sync (a server that dies leaves no cost
    /// behind after it).
    #[cfg(feature = "redis")]
    #[arg(long, value_name = "SECS", help_heading = "Several servers", value_parser = seconds)]
    redis_node_ttl: Option<Duration>,

    // Without the `redis` feature the flags are still known, so that they
    // are refused with the way to get them rather than as unknown.
    #[allow(dead_code)]
    #[cfg(not(feature = "redis"))]
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_parser = without_redis)]
    redis: Option<String>,
    #[allow(dead_code)]
    #[cfg(not(feature = "redis"))]
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_parser = without_redis)]
    node_name: Option<String>,
    #[allow(dead_code)]
    #[cfg(not(feature = "redis"))]
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_parser = without_redis)]
    redis_sync_ms: Option<String>,
    #[allow(dead_code)]
    #[cfg(not(feature = "redis"))]
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_parser = without_redis)]
    redis_node_ttl: Option<String>,
}

/// The `clap` command, every flag's help ending with its default.
fn command() -> clap::Command {
    let options = Options::default();
    let config = &options.config;
    let limits = &config.limits;
    let unlimited = |v: Option<usize>| v.map_or("none".to_owned(), |v| v.to_string());
    let exempt: Vec<String> = config.exempt_networks.iter().map(|n| n.to_string()).collect();
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut defaults = vec![
        ("blocks", options.blocks.to_string()),
        ("pay_to", "none".to_owned()),
        ("block_interval", options.block_interval.as_secs_f64().to_string()),
        (
            "listen",
            "127.0.0.1:50001 unless another listener is given".to_owned(),
        ),
        (
            "tls",
            "127.0.0.1:50002 unless another listener is given".to_owned(),
        ),
        ("ws", "none".to_owned()),
        ("wss", "none".to_owned()),
        ("http", "none".to_owned()),
        ("services", "none".to_owned()),
        ("tls_cert", "generated, self-signed".to_owned()),
        ("tls_key", "generated".to_owned()),
        ("admin", options.admin.to_string()),
        ("proxy_protocol", "off".to_owned()),
        ("padding", "tls".to_owned()),
        ("noise", "on".to_owned()),
        ("max_recv", options.max_recv.to_string()),
        ("max_send", config.max_send.to_string()),
        ("max_queued", options.max_queued.to_string()),
        ("max_send_delay", limits.max_send_delay.as_secs_f64().to_string()),
        ("max_sessions", limits.max_sessions.to_string()),
        ("max_sessions_per_group", unlimited(limits.max_sessions_per_group)),
        ("cost_soft_limit", limits.cost_soft_limit.to_string()),
        ("cost_hard_limit", limits.cost_hard_limit.to_string()),
        ("initial_concurrent", limits.initial_concurrent.to_string()),
        ("request_sleep_ms", limits.request_sleep.as_millis().to_string()),
        (
            "request_timeout",
            limits.request_timeout.as_secs_f64().to_string(),
        ),
        (
            "session_timeout",
            limits.session_timeout.as_secs_f64().to_string(),
        ),
        ("sweep_interval", config.sweep_interval.as_secs_f64().to_string()),
        ("exempt_networks", exempt.join(",")),
        ("max_subs_per_session", unlimited(limits.max_subs_per_session)),
        ("bandwidth_unit_cost", limits.bandwidth_unit_cost.to_string()),
        ("log_format", "text".to_owned()),
    ];
    #[cfg(feature = "redis")]
    {
        let ledger = indexer_sessions::redis_ledger::RedisLedgerConfig::new("", "");
        defaults.push(("redis_sync_ms", ledger.sync_interval.as_millis().to_string()));
        defaults.push(("redis_node_ttl", ledger.node_ttl.as_secs_f64().to_string()));
    }
    let command = Flags::command();
    #[cfg(not(feature = "redis"))]
    let command = command.after_help(format!("Several servers:\n  {WITHOUT_REDIS}"));
    edit_args(command, |arg| {
        match defaults.iter().find(|(id, _)| arg.get_id() == *id) {
            Some((_, default)) => {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            }
            None => arg,
        }
    })
}

/// `command` with `edit` applied to each of its flags, kept in their order
/// (which is the order of `--help`).
fn edit_args(mut command: clap::Command, mut edit: impl FnMut(clap::Arg) -> clap::Arg) -> clap::Command {
    let ids: Vec<clap::Id> = command.get_arguments().map(|arg| arg.get_id().clone()).collect();
    for id in ids {
        command = command.mut_arg(id, &mut edit);
    }
    command
}

/// The `--help` text, with every flag's default and environment variable.
pub fn help() -> String {
    command().render_help().to_string()
}

/// Why the `--redis` flags are refused in a build without them.
#[cfg(not(feature = "redis"))]
const WITHOUT_REDIS: &str = "--redis, --node-name, --redis-sync-ms and --redis-node-ttl need the example built \
with the `redis` feature: rebuild with `--features redis`, e.g. \
cargo run --example electrum_server --features tokio,redis -- --redis redis://127.0.0.1:6379/";

#[cfg(not(feature = "redis"))]
fn without_redis(_: &str) -> Result<String, String> {
    Err(WITHOUT_REDIS.to_owned())
}

/// Parses the arguments after the program name, with the process's
/// environment variables.
///
/// # Errors
/// `clap`'s message (starting `error:`, ending with the usage) naming the
/// flag and what is wrong with its value.
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    parse_with_env(args, |name| std::env::var_os(name))
}

/// [`parse`] with `env` in place of the process's environment: `env(NAME)`
/// is the value of the environment variable NAME, if set.
///
/// # Errors
/// As [`parse`].
pub fn parse_with_env<I, S>(args: I, env: impl Fn(&str) -> Option<OsString>) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    // `clap` would read the process's environment itself; the variables are
    // looked up through `env` instead and become the flags' defaults, which
    // gives the same precedence (a flag on the command line wins).
    let mut command = edit_args(command(), |arg| {
        let Some(value) = arg
            .get_env()
            .and_then(|name| env(name.to_str()?))
            .filter(|value| !value.is_empty())
        else {
            return arg.env(None::<&str>);
        };
        arg.env(None::<&str>).default_value(value)
    });
    let args = std::iter::once(OsString::from("electrum_server")).chain(args.into_iter().map(Into::into));
    let flags = match command.try_get_matches_from_mut(args) {
        Ok(mut matches) => Flags::from_arg_matches_mut(&mut matches),
        Err(error) => Err(error),
    };
    let flags = match flags {
        Ok(flags) => flags,
        Err(error) if error.kind() == ErrorKind::DisplayHelp => return Ok(Command::Help),
        Err(error) => return Err(error.render().to_string()),
    };
    let refuse = |kind: ErrorKind, message: String| command.clone().error(kind, message).render().to_string();
    let options = flags
        .into_options()
        .map_err(|message| refuse(ErrorKind::ValueValidation, message))?;
    options
        .config
        .validate()
        .map_err(|error| refuse(ErrorKind::ArgumentConflict, error.to_string()))?;
    #[cfg(feature = "redis")]
    check_redis(&options).map_err(|message| refuse(ErrorKind::ArgumentConflict, message))?;
    Ok(Command::Run(Box::new(options)))
}

impl Flags {
    /// The defaults with the given flags set.
    fn into_options(self) -> Result<Options, String> {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        let mut options = Options::default();
        let config = &mut options.config;
        let limits = &mut config.limits;
        set(&mut options.blocks, self.blocks);
        let mut total = 0u64;
        for (_, sats) in &self.pay_to {
            total = total
                .checked_add(*sats)
                .filter(|total| *total <= MAX_MONEY)
                .ok_or(
                    "the --pay-to amounts total more than 21,000,000 BTC, all the bitcoin there can ever be",
                )?;
        }
        options.pay_to = self.pay_to;
        set(&mut options.block_interval, self.block_interval);
        let mut listeners = Vec::new();
        if let Some(Services(entries)) = self.services {
            for entry in entries {
                match entry {
                    Entry::Service(service) => listeners.push(service),
                    Entry::Rpc(Some(admin)) => options.admin = admin,
                    Entry::Rpc(None) => {}
                }
            }
        }
        for (kind, addrs) in [
            (ServiceKind::Tcp, self.listen),
            (ServiceKind::Ssl, self.tls),
            (ServiceKind::Ws, self.ws),
            (ServiceKind::Wss, self.wss),
            (ServiceKind::Http, self.http),
        ] {
            listeners.extend(addrs.into_iter().map(|addr| Service { kind, addr }));
        }
        if !listeners.is_empty() {
            options.services = listeners;
        }
        set(&mut options.admin, self.admin);
        if self.tls_cert.is_some() && !options.services.iter().any(|service| service.kind.is_tls()) {
            return Err("--tls-cert and --tls-key need a TLS listener (--tls, --wss, or ssl:// or wss:// in SERVICES)".to_owned());
        }
        options.tls_cert = self.tls_cert;
        options.tls_key = self.tls_key;
        options.proxy_protocol = self.proxy_protocol;
        set(&mut options.padding, self.padding);
        set(&mut options.noise, self.noise);
        set(&mut options.max_recv, self.max_recv);
        set(&mut config.max_send, self.max_send);
        set(&mut options.max_queued, self.max_queued);
        set(&mut limits.max_send_delay, self.max_send_delay);
        set(&mut limits.max_sessions, self.max_sessions);
        set(
            &mut limits.max_sessions_per_group,
            self.max_sessions_per_group.map(|l| l.0),
        );
        set(&mut limits.cost_soft_limit, self.cost_soft_limit);
        set(&mut limits.cost_hard_limit, self.cost_hard_limit);
        set(&mut limits.initial_concurrent, self.initial_concurrent);
        set(
            &mut limits.request_sleep,
            self.request_sleep_ms.map(Duration::from_millis),
        );
        set(&mut limits.request_timeout, self.request_timeout);
        set(&mut limits.session_timeout, self.session_timeout);
        set(&mut config.sweep_interval, self.sweep_interval);
        set(&mut config.exempt_networks, self.exempt_networks.map(|n| n.0));
        set(
            &mut limits.max_subs_per_session,
            self.max_subs_per_session.map(|l| l.0),
        );
        set(&mut limits.bandwidth_unit_cost, self.bandwidth_unit_cost);
        options.metrics = self.metrics;
        options.status = self.status;
        set(&mut options.log_format, self.log_format);
        #[cfg(feature = "redis")]
        {
            let redis = &mut options.redis;
            redis.url = self.redis;
            redis.node_name = self.node_name;
            redis.sync_interval = self.redis_sync_ms.map(Duration::from_millis);
            redis.node_ttl = self.redis_node_ttl;
        }
        Ok(options)
    }
}

/// The `--redis` flags together: the others need `--redis`, and the
/// ledger must accept them.
#[cfg(feature = "redis")]
fn check_redis(options: &Options) -> Result<(), String> {
    let redis = &options.redis;
    match redis.ledger_config(options.config.limits.cost_hard_limit) {
        None if redis.node_name.is_some() || redis.sync_interval.is_some() || redis.node_ttl.is_some() => {
            Err("--node-name, --redis-sync-ms and --redis-node-ttl need --redis URL (see --help)".to_owned())
        }
        None => Ok(()),
        Some(config) => {
            if config.node_ttl <= config.sync_interval {
                return Err(format!(
                    "--redis-node-ttl ({:?}) must be longer than --redis-sync-ms ({:?})",
                    config.node_ttl, config.sync_interval
                ));
            }
            indexer_sessions::redis_ledger::RedisLedger::new(config)
                .map(drop)
                .map_err(|error| error.to_string())
        }
    }
}

fn addr(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:50001 or [::1]:50001".to_owned())
}

#[cfg(feature = "redis")]
fn text(value: &str) -> Result<String, String> {
    Ok(value.trim().to_owned())
}

fn service_list(value: &str) -> Result<Services, String> {
    services::parse_list(value).map(Services)
}

fn on_off(value: &str) -> Result<bool, String> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected `on` or `off`".to_owned()),
    }
}

fn padding_mode(value: &str) -> Result<crate::padding::PaddingMode, String> {
    use crate::padding::PaddingMode;
    match value.trim() {
        "off" => Ok(PaddingMode::Off),
        "tls" => Ok(PaddingMode::Tls),
        "on" => Ok(PaddingMode::On),
        _ => Err("expected `off`, `tls` or `on`".to_owned()),
    }
}

fn log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected `text` or `json`".to_owned()),
    }
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_owned())
}

fn positive<T: std::str::FromStr + Default + PartialEq>(value: &str) -> Result<T, String> {
    let n: T = number(value)?;
    if n == T::default() {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

fn limit(value: &str) -> Result<Limit, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        Ok(Limit(None))
    } else {
        positive(value).map(|n| Limit(Some(n)))
    }
}

fn cost(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(cost) if cost.is_finite() && cost >= 0.0 => Ok(cost),
        _ => Err("expected a non-negative number".to_owned()),
    }
}

fn unit_cost(value: &str) -> Result<f64, String> {
    let cost = cost(value)?;
    if cost == 0.0 {
        return Err("must be more than 0".to_owned());
    }
    Ok(cost)
}

fn seconds_or_zero(value: &str) -> Result<Duration, String> {
    let secs = cost(value).map_err(|_| "expected a number of seconds".to_owned())?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn seconds(value: &str) -> Result<Duration, String> {
    match seconds_or_zero(value)? {
        Duration::ZERO => Err("must be more than 0 seconds".to_owned()),
        duration => Ok(duration),
    }
}

fn networks(value: &str) -> Result<Networks, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(Networks(Vec::new()));
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnetwork::IpNetwork>()
                .map_err(|e| format!("{part:?} is not a CIDR network: {e}"))
        })
        .collect::<Result<_, _>>()
        .map(Networks)
}

/// `ADDRESS:AMOUNT`: BTC by default, satoshis with a `sat`/`sats` suffix;
/// never more than 21,000,000 BTC.
pub fn pay_to(value: &str) -> Result<(String, u64), String> {
    let (address, amount) = value
        .rsplit_once(':')
        .ok_or("expected ADDRESS:AMOUNT, e.g. bcrt1q…:1.5 (BTC) or bcrt1q…:150000sat")?;
    let amount = amount.trim();
    let sats = if let Some(sats) = amount.strip_suffix("sats").or_else(|| amount.strip_suffix("sat")) {
        sats.trim()
            .parse::<u64>()
            .map_err(|_| format!("{amount:?} is not a whole number of satoshis"))?
    } else {
        let btc = amount.strip_suffix("btc").unwrap_or(amount).trim();
        Amount::from_str_in(btc, Denomination::Bitcoin)
            .map_err(|e| format!("{amount:?} is not an amount in BTC: {e}"))?
            .to_sat()
    };
    if sats > MAX_MONEY {
        return Err(format!(
            "{amount:?} is more than 21,000,000 BTC, all the bitcoin there can ever be"
        ));
    }
    // Fail early on a bad address rather than after building half a chain.
    crate::chain::address_script(address).map_err(|e| e.to_string())?;
    Ok((address.to_owned(), sats))
}
