//! Command-line flags, parsed by hand into [`Options`].
//!
//! Every flag takes one value, as `--flag VALUE` or `--flag=VALUE`;
//! `--pay-to` may be repeated. Durations are seconds (fractions allowed).

use std::net::SocketAddr;
use std::time::Duration;

use bitcoin::{Amount, Denomination};
use indexer_sessions::Config;

use crate::server::{LogFormat, Options};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Run(Box<Options>),
    /// Print [`help`] and exit.
    Help,
}

/// The `--help` text, with every flag's default.
pub fn help() -> String {
    let options = Options::default();
    let config = &options.config;
    let limits = &config.limits;
    let exempt: Vec<String> = config.exempt_networks.iter().map(|n| n.to_string()).collect();
    let unlimited = |v: Option<usize>| v.map_or("none".to_owned(), |v| v.to_string());
    format!(
        "electrum_server: an Electrum protocol 1.4 server on an in-process regtest chain,
built on the indexer-sessions SessionManager.

USAGE:
    cargo run --example electrum_server --features tokio -- [FLAGS]

CHAIN:
    --blocks N                   blocks mined on top of genesis at start [default: {blocks}]
    --pay-to ADDRESS:AMOUNT      pay AMOUNT to a regtest address (bcrt1…, m…/n…, 2…) in the
                                 initial chain; AMOUNT is in BTC (1.5, 0.001), or in satoshis
                                 with a `sat` suffix (150000sat); repeatable [default: none]
    --block-interval SECS        mine a block every SECS seconds; 0 = only on demand
                                 (admin `generate`) [default: {interval}]

NETWORK:
    --listen ADDR                Electrum TCP listener [default: {listen}]
    --admin ADDR                 admin JSON-RPC listener (getinfo, sessions, groups,
                                 disconnect, ban, unban, generate) [default: {admin}]
    --max-recv BYTES             longest request line; longer ones are dropped [default: {max_recv}]
    --max-send BYTES             largest response; larger ones become an error, and a batch's
                                 replies stop growing here [default: {max_send}]
    --max-queued BYTES           bytes of replies and notifications waiting for one client
                                 (one larger message may wait alone) [default: {max_queued}]
    --max-send-delay SECS        longest wait for a client to read (each write, and room in
                                 its queue); past it the client is disconnected
                                 [default: {max_send_delay}]

SESSION LIMITS:
    --max-sessions N             sessions at once; the listener pauses here and resumes
                                 at 95 % [default: {max_sessions}]
    --max-sessions-per-group N   sessions per IP group (/24, /48), or `none` [default: {per_group}]
    --cost-soft-limit COST       cost where throttling starts [default: {soft}]
    --cost-hard-limit COST       cost where the client is disconnected (-101) [default: {hard}]
    --initial-concurrent N       concurrent requests per unthrottled session [default: {concurrent}]
    --request-sleep-ms MS        throttle sleep per request at full throttle [default: {sleep}]
    --request-timeout SECS       time a request may take before -102 [default: {request_timeout}]
    --session-timeout SECS       idle time before a session is closed [default: {session_timeout}]
    --sweep-interval SECS        how often idle sessions are looked for [default: {sweep}]
    --exempt-networks CIDRS      comma-separated networks whose clients belong to no group;
                                 `none` groups every address, loopback included
                                 [default: {exempt}]
    --max-subs-per-session N     scripthash subscriptions per session, or `none` [default: {subs}]
    --bandwidth-unit-cost BYTES  bytes in or out that cost 1 [default: {bandwidth}]

OBSERVABILITY:
    --metrics ADDR               serve Prometheus text at http://ADDR/metrics [default: off]
    --status ADDR                serve a live status page at http://ADDR/ [default: off]
    --log-format FORMAT          `text` or `json` (one object per line); RUST_LOG picks
                                 what is logged (e.g. `info`, `debug`) [default: text]

{cluster}
    -h, --help                   print this help
",
        blocks = options.blocks,
        interval = options.block_interval.as_secs_f64(),
        listen = options.listen,
        admin = options.admin,
        max_recv = options.max_recv,
        max_send = config.max_send,
        max_queued = options.max_queued,
        max_send_delay = limits.max_send_delay.as_secs_f64(),
        max_sessions = limits.max_sessions,
        per_group = unlimited(limits.max_sessions_per_group),
        soft = limits.cost_soft_limit,
        hard = limits.cost_hard_limit,
        concurrent = limits.initial_concurrent,
        sleep = limits.request_sleep.as_millis(),
        request_timeout = limits.request_timeout.as_secs_f64(),
        session_timeout = limits.session_timeout.as_secs_f64(),
        sweep = config.sweep_interval.as_secs_f64(),
        exempt = exempt.join(","),
        subs = unlimited(limits.max_subs_per_session),
        bandwidth = limits.bandwidth_unit_cost,
        cluster = cluster_help(),
    )
}

/// The `--redis` section of [`help`].
#[cfg(feature = "redis")]
fn cluster_help() -> String {
    let defaults = indexer_sessions::redis_ledger::RedisLedgerConfig::new("", "");
    format!(
        "SEVERAL SERVERS:
    --redis URL                  share IP groups' costs, their session counts and bans with
                                 every server on this Redis, e.g. redis://127.0.0.1:6379/
                                 [default: off, kept in this process]
    --node-name NAME             this server's name among them, unique
                                 [default: HOSTNAME-PID]
    --redis-sync-ms MS           how often this server's view is reconciled with Redis
                                 [default: {sync}]
    --redis-node-ttl SECS        how long a server's share outlives its last sync (a server
                                 that dies leaves no cost behind after it) [default: {ttl}]
",
        sync = defaults.sync_interval.as_millis(),
        ttl = defaults.node_ttl.as_secs_f64(),
    )
}

/// The `--redis` section of [`help`], for a build without the flags.
#[cfg(not(feature = "redis"))]
fn cluster_help() -> String {
    format!("SEVERAL SERVERS:\n    {WITHOUT_REDIS}\n")
}

/// Why the `--redis` flags are refused in a build without them.
#[cfg(not(feature = "redis"))]
const WITHOUT_REDIS: &str = "--redis, --node-name, --redis-sync-ms and --redis-node-ttl need the example built \
with the `redis` feature: rebuild with `--features redis`, e.g. \
cargo run --example electrum_server --features tokio,redis -- --redis redis://127.0.0.1:6379/";

/// Parses the arguments after the program name.
///
/// # Errors
/// A message naming the flag and what is wrong with its value.
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut options = Options::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {arg:?} (see --help)"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value (see --help)"))?,
        };
        apply(&mut options, &flag, &value).map_err(|reason| format!("{flag} {value:?}: {reason}"))?;
    }
    options.config.validate().map_err(|error| error.to_string())?;
    #[cfg(feature = "redis")]
    check_redis(&options)?;
    Ok(Command::Run(Box::new(options)))
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

fn apply(options: &mut Options, flag: &str, value: &str) -> Result<(), String> {
    let config: &mut Config = &mut options.config;
    let limits = &mut config.limits;
    match flag {
        "--listen" => options.listen = addr(value)?,
        "--admin" => options.admin = addr(value)?,
        "--metrics" => options.metrics = Some(addr(value)?),
        "--status" => options.status = Some(addr(value)?),
        "--log-format" => {
            options.log_format = match value.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("expected `text` or `json`".to_owned()),
            }
        }
        "--blocks" => options.blocks = number(value)?,
        "--pay-to" => options.pay_to.push(pay_to(value)?),
        "--block-interval" => options.block_interval = seconds(value, true)?,
        "--max-recv" => options.max_recv = positive(value)?,
        "--max-send" => config.max_send = positive(value)?,
        "--max-queued" => options.max_queued = positive(value)?,
        "--max-send-delay" => limits.max_send_delay = seconds(value, false)?,
        "--max-sessions" => limits.max_sessions = positive(value)?,
        "--max-sessions-per-group" => limits.max_sessions_per_group = optional(value)?,
        "--cost-soft-limit" => limits.cost_soft_limit = cost(value)?,
        "--cost-hard-limit" => limits.cost_hard_limit = cost(value)?,
        "--initial-concurrent" => limits.initial_concurrent = positive(value)?,
        "--request-sleep-ms" => limits.request_sleep = Duration::from_millis(number(value)?),
        "--request-timeout" => limits.request_timeout = seconds(value, false)?,
        "--session-timeout" => limits.session_timeout = seconds(value, false)?,
        "--sweep-interval" => config.sweep_interval = seconds(value, false)?,
        "--exempt-networks" => config.exempt_networks = networks(value)?,
        "--max-subs-per-session" => limits.max_subs_per_session = optional(value)?,
        "--bandwidth-unit-cost" => {
            limits.bandwidth_unit_cost = cost(value)?;
            if limits.bandwidth_unit_cost == 0.0 {
                return Err("must be more than 0".to_owned());
            }
        }
        #[cfg(feature = "redis")]
        "--redis" => options.redis.url = Some(value.trim().to_owned()),
        #[cfg(feature = "redis")]
        "--node-name" => options.redis.node_name = Some(value.trim().to_owned()),
        #[cfg(feature = "redis")]
        "--redis-sync-ms" => options.redis.sync_interval = Some(Duration::from_millis(positive(value)?)),
        #[cfg(feature = "redis")]
        "--redis-node-ttl" => options.redis.node_ttl = Some(seconds(value, false)?),
        #[cfg(not(feature = "redis"))]
        "--redis" | "--node-name" | "--redis-sync-ms" | "--redis-node-ttl" => {
            return Err(WITHOUT_REDIS.to_owned());
        }
        _ => return Err("unknown flag (see --help)".to_owned()),
    }
    Ok(())
}

fn addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:50001 or [::1]:50001".to_owned())
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

fn optional(value: &str) -> Result<Option<usize>, String> {
    if value.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        positive(value).map(Some)
    }
}

fn cost(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(cost) if cost.is_finite() && cost >= 0.0 => Ok(cost),
        _ => Err("expected a non-negative number".to_owned()),
    }
}

fn seconds(value: &str, zero_ok: bool) -> Result<Duration, String> {
    let secs = cost(value).map_err(|_| "expected a number of seconds".to_owned())?;
    if secs == 0.0 && !zero_ok {
        return Err("must be more than 0 seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn networks(value: &str) -> Result<Vec<ipnetwork::IpNetwork>, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnetwork::IpNetwork>()
                .map_err(|e| format!("{part:?} is not a CIDR network: {e}"))
        })
        .collect()
}

/// `ADDRESS:AMOUNT`: BTC by default, satoshis with a `sat`/`sats` suffix.
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
    // Fail early on a bad address rather than after building half a chain.
    crate::chain::address_script(address).map_err(|e| e.to_string())?;
    Ok((address.to_owned(), sats))
}
